"""The domain services of one server, built once and shared by every interface."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from iotvideo.bus import Bus
from iotvideo.config import Settings
from iotvideo.devicelink.link import DeviceLink
from iotvideo.domain.device_state import DeviceState
from iotvideo.domain.devices import Registry
from iotvideo.domain.lifecycle import Lifecycles
from iotvideo.domain.plans import Plans
from iotvideo.domain.templates import Templates
from iotvideo.domain.tenants import Tenants
from iotvideo.secretbox import SecretBox, load_master_key
from iotvideo.store.db import migrate
from iotvideo.store.units import Store

if TYPE_CHECKING:
    from iotvideo.domain.live import LiveSessions


@dataclass
class Services:
    settings: Settings
    # The async engine (aiosqlite / asyncpg) for code not written as units of work yet;
    # the domain services use ``store``.
    db: AsyncEngine
    box: SecretBox
    tenants: Tenants
    registry: Registry
    templates: Templates
    record_plans: Plans
    event_plans: Plans
    lifecycles: Lifecycles
    bus: Bus
    device_state: DeviceState
    link: DeviceLink
    store: Store
    # Live sessions need the media node: ``app.Server`` sets this; CLI admin commands leave it None.
    live: "LiveSessions | None" = None

    @classmethod
    async def open(cls, settings: Settings) -> "Services":
        """Connects to the store, applies migrations and builds the services."""
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        box = SecretBox(load_master_key(settings.data_dir, settings.master_key))
        store = Store.open(settings.resolved_database_url())
        db = store.engine
        await migrate(db)
        bus = Bus()
        state = DeviceState(store, box)
        services = cls(settings, db, box, Tenants(store, box), Registry(store, box, bus), Templates(store),
                       Plans(store, "record"), Plans(store, "event"), Lifecycles(store), bus, state,
                       DeviceLink(state, bus, settings.rpc_timeout_s), store)
        _freeze_startup_heap()
        return services

    async def close(self) -> None:
        await self.link.close()
        await self.device_state.stop()
        await self.store.close()  # and disposes of db


_frozen = False


def _freeze_startup_heap() -> None:
    """Once per process: what is alive after the first start (modules, schema, engines,
    statements) lives as long as the process, so keep it out of the cyclic GC's full
    collections, which otherwise scan it every time and stall every request in flight
    (PostgreSQL p99 under load 40-50 ms -> 15-20 ms, docs/benchmarks.md). Garbage is
    collected first."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()
