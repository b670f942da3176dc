"""The domain services of one server, built once and shared by every interface."""

from __future__ import annotations

from dataclasses import dataclass

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
from iotvideo.store.db import create_engine, migrate


@dataclass
class Services:
    settings: Settings
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

    @classmethod
    async def open(cls, settings: Settings) -> "Services":
        """Connects to the store, applies migrations and builds the services."""
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        box = SecretBox(load_master_key(settings.data_dir, settings.master_key))
        db = create_engine(settings.resolved_database_url())
        await migrate(db)
        bus = Bus()
        state = DeviceState(db, box)
        return cls(settings, db, box, Tenants(db, box), Registry(db, box, bus), Templates(db),
                   Plans(db, "record"), Plans(db, "event"), Lifecycles(db), bus, state,
                   DeviceLink(state, bus, settings.rpc_timeout_s))

    async def close(self) -> None:
        await self.link.close()
        await self.device_state.stop()
        await self.db.dispose()
