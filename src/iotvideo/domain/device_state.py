"""What the device link learns about devices, written to the store: credentials for
authentication, online/offline status, firmware and the latest property values.

Status changes are coalesced and written in batches (a connect storm of thousands of
devices becomes a few transactions), at most ``flush_interval`` after they happen.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from iotvideo.domain.clock import now_ms
from iotvideo.secretbox import SecretBox
from iotvideo.store.schema import device_properties, devices
from iotvideo.store.units import Store

log = logging.getLogger("iotvideo.devicestate")


@dataclass(frozen=True)
class DeviceCredentials:
    iot_id: str
    tenant_id: str
    product_key: str
    device_name: str
    secret: str
    enabled: bool
    status: str


_CREDENTIALS = (select(devices.c.iot_id, devices.c.tenant_id, devices.c.secret_sealed, devices.c.enabled,
                       devices.c.status)
                .where(devices.c.product_key == bindparam("pk"), devices.c.device_name == bindparam("dn")))


@dataclass(frozen=True)
class PropertyValue:
    identifier: str
    value: Any
    time_ms: int


class DeviceState:
    CREDENTIAL_CACHE_S = 30.0

    def __init__(self, store: Store, box: SecretBox, flush_interval: float = 0.1) -> None:
        self._store = store
        self._box = box
        self._cache: dict[tuple[str, str], tuple[float, DeviceCredentials | None]] = {}
        self._online: dict[str, tuple[str, int]] = {}
        self._offline: set[str] = set()
        self._flush_interval = flush_interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- credentials ---
    async def credentials(self, product_key: str, device_name: str) -> DeviceCredentials | None:
        """The device's identity and secret, cached briefly (forget() drops an entry)."""
        k = (product_key, device_name)
        now = time.monotonic()
        hit = self._cache.get(k)
        if hit and hit[0] > now:
            return hit[1]
        r = await self._store.read(lambda c: c.execute(_CREDENTIALS, {"pk": product_key, "dn": device_name}).first())
        cred = None
        if r is not None:
            cred = DeviceCredentials(r.iot_id, r.tenant_id, product_key, device_name,
                                     self._box.open(r.secret_sealed), bool(r.enabled), r.status)
        # Only an enabled device's credentials are cached: nothing announces EnableThing or a
        # new registration, so a cached refusal (unknown or disabled) would keep refusing a
        # device that may now connect until it expired.
        if cred is not None and cred.enabled:
            if len(self._cache) > 200_000:
                self._cache.clear()
            self._cache[k] = (now + self.CREDENTIAL_CACHE_S, cred)
        else:
            self._cache.pop(k, None)
        return cred

    def forget(self, product_key: str | None = None, device_name: str | None = None) -> None:
        if product_key is None:
            self._cache.clear()
        else:
            self._cache.pop((product_key, device_name or ""), None)

    async def status(self, iot_id: str) -> str | None:
        return await self._store.read(
            lambda c: c.execute(select(devices.c.status).where(devices.c.iot_id == iot_id)).scalar())

    # --- status, batched ---
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        await self.flush()

    def mark_online(self, iot_id: str, ip_address: str) -> None:
        self._offline.discard(iot_id)
        self._online[iot_id] = (ip_address, now_ms())
        self._wake.set()

    def mark_offline(self, iot_id: str) -> None:
        # A connect not yet written stays queued: flush() applies it before the disconnect,
        # so a device that came and went within one flush interval is OFFLINE (and active),
        # not left UNACTIVE.
        self._offline.add(iot_id)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._flush_interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("device status flush failed; will retry")
                self._wake.set()
                await asyncio.sleep(1.0)

    async def flush(self) -> None:
        online, self._online = self._online, {}
        offline, self._offline = self._offline, set()
        if not online and not offline:
            return
        def unit(c: Connection) -> None:
            if online:
                # Only an enabled device goes ONLINE (a disable racing the connect wins).
                c.execute(
                    update(devices).where(devices.c.iot_id == bindparam("b_iot_id"), devices.c.enabled.is_(True))
                    .values(status="ONLINE", ip_address=bindparam("b_ip"), online_ms=bindparam("b_now"),
                            active_ms=func.coalesce(devices.c.active_ms, bindparam("b_now"))),
                    [{"b_iot_id": k, "b_ip": ip, "b_now": t} for k, (ip, t) in online.items()])
            if offline:
                c.execute(
                    update(devices).where(devices.c.iot_id == bindparam("b_iot_id"), devices.c.status == "ONLINE")
                    .values(status="OFFLINE"),
                    [{"b_iot_id": k} for k in offline])

        try:
            await self._store.write(unit)
        except Exception:
            # put them back (newer news wins) and let the caller retry
            newer_online = set(self._online)
            for k, v in online.items():
                self._online.setdefault(k, v)
            for k in offline:
                if k not in newer_online:
                    self._offline.add(k)
            raise

    async def reset_online(self) -> int:
        """At start of a single-node embedded broker: nobody is connected yet."""
        return await self._store.write(lambda c: int(
            c.execute(update(devices).where(devices.c.status == "ONLINE").values(status="OFFLINE")).rowcount or 0))

    # --- firmware and properties ---
    async def set_firmware(self, iot_id: str, version: str) -> None:
        await self._store.write(lambda c: c.execute(
            update(devices).where(devices.c.iot_id == iot_id).values(firmware_version=version[:64])))

    async def save_properties(self, iot_id: str, params: dict[str, Any], time_ms: int) -> None:
        if not params:
            return
        rows = [{"iot_id": iot_id, "identifier": k, "value": json.dumps(v, ensure_ascii=False), "time_ms": time_ms}
                for k, v in params.items()]
        def unit(c: Connection) -> None:
            ins = (postgresql.insert if c.dialect.name == "postgresql" else sqlite.insert)(device_properties)
            c.execute(ins.on_conflict_do_update(index_elements=["iot_id", "identifier"],
                                                set_={"value": ins.excluded.value, "time_ms": ins.excluded.time_ms}),
                      rows)
            fw = params.get("FirmwareVersion")
            if isinstance(fw, str) and fw:
                c.execute(update(devices).where(devices.c.iot_id == iot_id).values(firmware_version=fw[:64]))

        await self._store.write(unit)

    async def properties(self, iot_id: str) -> list[PropertyValue]:
        rows = await self._store.read(lambda c: c.execute(
            select(device_properties).where(device_properties.c.iot_id == iot_id)
            .order_by(device_properties.c.identifier)).all())
        return [PropertyValue(r.identifier, json.loads(r.value), r.time_ms) for r in rows]


    async def online_and_disabled(self) -> tuple[set[str], set[str]]:
        """The IotIds the store has ONLINE (and enabled), and those disabled."""

        def unit(c: Connection) -> tuple[set[str], set[str]]:
            online: set[str] = set()
            disabled: set[str] = set()
            for r in c.execute(select(devices.c.iot_id, devices.c.enabled)
                               .where(or_(devices.c.status == "ONLINE", devices.c.enabled.is_(False)))):
                (online if r.enabled else disabled).add(r.iot_id)
            return online, disabled

        return await self._store.read(unit)
