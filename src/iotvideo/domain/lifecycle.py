"""Storage lifecycle: how many days a device's cloud recordings and pictures are kept.

``Day`` is 0..3650; 0 means keep none. A device that was never given a lifecycle has
none: querying it gives the seed's 466 ``deviceList lifecycle not exist.``
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from iotvideo.domain.devices import DeviceRef, resolve_iot_id
from iotvideo.errors import BusinessError, lifecycle_not_exist, tenant_auth_error
from iotvideo.store.schema import devices

MAX_DAYS = 3650
What = Literal["record", "picture"]


class Lifecycles:
    def __init__(self, db: AsyncEngine) -> None:
        self._db = db

    def _col(self, what: What):  # type: ignore[no-untyped-def]
        return devices.c.record_life_days if what == "record" else devices.c.picture_life_days

    async def set(self, tenant_id: str, ref: DeviceRef, what: What, days: int) -> None:
        if not 0 <= days <= MAX_DAYS:
            raise BusinessError("460", f"Day must be 0..{MAX_DAYS}.")
        async with self._db.begin() as conn:
            iot_id = await resolve_iot_id(conn, tenant_id, ref)
            await conn.execute(update(devices).where(devices.c.iot_id == iot_id).values({self._col(what): days}))

    async def get(self, tenant_id: str, ref: DeviceRef, what: What) -> tuple[str, int]:
        async with self._db.connect() as conn:
            iot_id = await resolve_iot_id(conn, tenant_id, ref)
            days = (await conn.execute(select(self._col(what)).where(devices.c.iot_id == iot_id))).scalar()
        if days is None:
            raise lifecycle_not_exist()
        return iot_id, int(days)

    async def get_many(self, tenant_id: str, iot_ids: list[str], what: What) -> list[tuple[str, int]]:
        """Lifecycles of several devices, in the order asked; any device of another
        tenant or unknown gives ``tenant auth error``; devices without one are left out,
        and if none has one the answer is ``deviceList lifecycle not exist.``"""
        col = self._col(what)
        async with self._db.connect() as conn:
            rows = (await conn.execute(select(devices.c.iot_id, devices.c.tenant_id, col.label("days"))
                                       .where(devices.c.iot_id.in_(set(iot_ids))))).all()
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
