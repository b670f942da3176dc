"""Storage lifecycle: how many days a device's cloud recordings and pictures are kept.

``Day`` is 0..3650; 0 means keep none. A device that was never given a lifecycle has
none: querying it gives the seed's 466 ``deviceList lifecycle not exist.``
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from iotvideo.domain.devices import DeviceRef, resolve_iot_id
from iotvideo.errors import BusinessError, lifecycle_not_exist, tenant_auth_error
from iotvideo.store.schema import devices
from iotvideo.store.units import Store

MAX_DAYS = 3650
What = Literal["record", "picture"]

_COLS = {"record": devices.c.record_life_days, "picture": devices.c.picture_life_days}
_ONE = {w: select(col).where(devices.c.iot_id == bindparam("iot_id")) for w, col in _COLS.items()}
_SET = {w: update(devices).where(devices.c.iot_id == bindparam("b_iot_id")).values({col: bindparam("b_days")})
        for w, col in _COLS.items()}


class Lifecycles:
    def __init__(self, store: Store) -> None:
        self._store = store

    def _col(self, what: What):  # type: ignore[no-untyped-def]
        return _COLS[what]

    async def set(self, tenant_id: str, ref: DeviceRef, what: What, days: int) -> None:
        if not 0 <= days <= MAX_DAYS:
            raise BusinessError("460", f"Day must be 0..{MAX_DAYS}.")

        def unit(c: Connection) -> None:
            iot_id = resolve_iot_id(c, tenant_id, ref)
            c.execute(_SET[what], {"b_iot_id": iot_id, "b_days": days})

        await self._store.write(unit)

    async def get(self, tenant_id: str, ref: DeviceRef, what: What) -> tuple[str, int]:
        def unit(c: Connection) -> tuple[str, int | None]:
            iot_id = resolve_iot_id(c, tenant_id, ref)
            return iot_id, c.execute(_ONE[what], {"iot_id": iot_id}).scalar()

        iot_id, days = await self._store.read(unit)
        if days is None:
            raise lifecycle_not_exist()
        return iot_id, int(days)

    async def get_many(self, tenant_id: str, iot_ids: list[str], what: What) -> list[tuple[str, int]]:
        """Lifecycles of several devices, in the order asked; any device of another
        tenant or unknown gives ``tenant auth error``; devices without one are left out,
        and if none has one the answer is ``deviceList lifecycle not exist.``"""
        q = (select(devices.c.iot_id, devices.c.tenant_id, self._col(what).label("days"))
             .where(devices.c.iot_id.in_(set(iot_ids))))
        rows = await self._store.read(lambda c: c.execute(q).all())
        found = {r.iot_id: r for r in rows}
        out: list[tuple[str, int]] = []
        for iot_id in dict.fromkeys(iot_ids):
            r = found.get(iot_id)
            if r is None or r.tenant_id != tenant_id:
                raise tenant_auth_error()
            if r.days is not None:
                out.append((iot_id, int(r.days)))
        if not out:
            raise lifecycle_not_exist()
        return out
