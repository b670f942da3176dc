"""Record plans and event record plans, and which device streams are in them.

Both kinds share one set of rules (docs/api.md, "Plans"):
* a plan names a time template of the same tenant; an unknown one is refused;
* a device stream (IotId, StreamType) is in at most one plan of each kind: adding it
  to the plan it is already in succeeds and changes nothing; adding it to another plan
  of the same kind is refused (remove it first);
* deleting a plan releases its devices;
* event plans: ``EventTypes`` is "1" (motion), "2" (sound) or "1,2"; ``RecordDuration``
  1..3600 s includes ``PreRecordDuration`` 0..RecordDuration s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from iotvideo import ids
from iotvideo.domain.clock import now_ms
from iotvideo.domain.devices import DeviceRef, resolve_iot_id
from iotvideo.domain.paging import Page, PageRequest
from iotvideo.domain.templates import TimeTemplate, check_name, load_template
from iotvideo.errors import BusinessError, conflict, not_found
from iotvideo.store.schema import event_record_plans, plan_devices, record_plans

PlanKind = Literal["record", "event"]
EVENT_TYPES = {"1": "1", "2": "2", "1,2": "1,2", "2,1": "1,2"}
MAX_RECORD_S = 3600
STREAM_TYPES = (0, 1)


@dataclass(frozen=True)
class EventSettings:
    event_types: str = "1"
    pre_record_s: int = 0
    record_s: int = 0


def check_event_settings(s: EventSettings) -> EventSettings:
    types = EVENT_TYPES.get(s.event_types.replace(" ", ""))
    if types is None:
        raise BusinessError("460", 'EventTypes must be "1", "2" or "1,2".')
    if not 1 <= s.record_s <= MAX_RECORD_S:
        raise BusinessError("460", f"RecordDuration must be 1..{MAX_RECORD_S} seconds.")
    if not 0 <= s.pre_record_s <= s.record_s:
        raise BusinessError("460", "PreRecordDuration must be 0..RecordDuration seconds.")
    return replace(s, event_types=types)


@dataclass(frozen=True)
class Plan:
    id: str
    name: str
    template_id: str
    event: EventSettings | None = None


@dataclass(frozen=True)
class PlanDevice:
    iot_id: str
    stream_type: int


class Plans:
    """One kind of plan ('record' or 'event') for every tenant."""

    def __init__(self, db: AsyncEngine, kind: PlanKind) -> None:
        self._db = db
        self.kind: PlanKind = kind
        self._t: Table = record_plans if kind == "record" else event_record_plans
        self._label = "record plan" if kind == "record" else "event record plan"

    def _plan(self, r: Row) -> Plan:  # type: ignore[type-arg]
        event = EventSettings(r.event_types, r.pre_record_s, r.record_s) if self.kind == "event" else None
        return Plan(r.id, r.name, r.template_id, event)

    def _values(self, plan: Plan) -> dict[str, object]:
        v: dict[str, object] = {"name": plan.name, "template_id": plan.template_id}
        if plan.event is not None:
            v.update(event_types=plan.event.event_types, pre_record_s=plan.event.pre_record_s,
                     record_s=plan.event.record_s)
        return v

    async def _load(self, conn: AsyncConnection, tenant_id: str, plan_id: str, lock: bool = False) -> Plan:
        """The caller's plan or 460 ``… not exist.``; ``lock`` takes a share lock on its row
        (PostgreSQL) so that a concurrent delete waits for this transaction."""
        q = select(self._t).where(self._t.c.id == plan_id, self._t.c.tenant_id == tenant_id)
        if lock:
            q = q.with_for_update(read=True)
        row = (await conn.execute(q)).first()
        if row is None:
            raise not_found(self._label)
        return self._plan(row)

    async def create(self, tenant_id: str, name: str, template_id: str, event: EventSettings | None = None) -> str:
        plan = Plan(ids.object_id(), check_name(name), template_id,
                    check_event_settings(event) if self.kind == "event" and event else None)
        if self.kind == "event" and plan.event is None:
            raise BusinessError("460", "RecordDuration is required.")
        try:
            async with self._db.begin() as conn:
                await load_template(conn, tenant_id, template_id, lock="share")
                await conn.execute(insert(self._t).values(id=plan.id, tenant_id=tenant_id, created_ms=now_ms(),
                                                          **self._values(plan)))
        except IntegrityError:  # the template was deleted meanwhile (foreign key)
            raise not_found("template") from None
        return plan.id

    async def update(self, tenant_id: str, plan_id: str, name: str | None = None, template_id: str | None = None,
                     event_types: str | None = None, pre_record_s: int | None = None,
                     record_s: int | None = None) -> None:
        """Changes the fields given; the others stay as they are."""
        try:
            async with self._db.begin() as conn:
                cur = await self._load(conn, tenant_id, plan_id, lock=True)
                new = replace(cur, name=cur.name if name is None else check_name(name),
                              template_id=template_id or cur.template_id)
                if new.template_id != cur.template_id:
                    await load_template(conn, tenant_id, new.template_id, lock="share")
                if cur.event is not None:
                    e = cur.event
                    new = replace(new, event=check_event_settings(EventSettings(
                        e.event_types if event_types is None else event_types,
                        e.pre_record_s if pre_record_s is None else pre_record_s,
                        e.record_s if record_s is None else record_s)))
                res = await conn.execute(update(self._t).where(self._t.c.id == plan_id).values(**self._values(new)))
                if res.rowcount == 0:  # deleted since it was read (SQLite reads without locks)
                    raise not_found(self._label)
        except IntegrityError:  # the new template was deleted meanwhile (foreign key)
            raise not_found("template") from None

    async def delete(self, tenant_id: str, plan_id: str) -> None:
        async with self._db.begin() as conn:
            await self._load(conn, tenant_id, plan_id)
            # The plan row first: on PostgreSQL this waits for any add_device holding a
            # share lock on it, so the next statement also sees (and releases) its device.
            await conn.execute(delete(self._t).where(self._t.c.id == plan_id))
            await conn.execute(delete(plan_devices).where(plan_devices.c.kind == self.kind, plan_devices.c.plan_id == plan_id))

    async def get(self, tenant_id: str, plan_id: str) -> tuple[Plan, TimeTemplate]:
        async with self._db.connect() as conn:
            plan = await self._load(conn, tenant_id, plan_id)
            return plan, await load_template(conn, tenant_id, plan.template_id)

    async def list(self, tenant_id: str, page: PageRequest) -> Page[Plan]:
        where = self._t.c.tenant_id == tenant_id
        async with self._db.connect() as conn:
            total = (await conn.execute(select(func.count()).select_from(self._t).where(where))).scalar_one()
            rows = (await conn.execute(select(self._t).where(where).order_by(self._t.c.created_ms, self._t.c.id)
                                       .offset(page.offset).limit(page.size))).all()
        return Page([self._plan(r) for r in rows], total, page)

    # --- devices in plans ---
    async def add_device(self, tenant_id: str, plan_id: str, ref: DeviceRef, stream_type: int) -> None:
        """Binds the stream to the plan. Concurrent calls for one stream are serialised by
        the primary key: the loser tries once more and then sees the winner's binding (same
        plan: success; another plan: refused), as if the calls had come one after the other."""
        try:
            await self._add_device(tenant_id, plan_id, ref, stream_type)
        except IntegrityError:
            await self._add_device(tenant_id, plan_id, ref, stream_type)

    async def _add_device(self, tenant_id: str, plan_id: str, ref: DeviceRef, stream_type: int) -> None:
        async with self._db.begin() as conn:
            await self._load(conn, tenant_id, plan_id, lock=True)
            iot_id = await resolve_iot_id(conn, tenant_id, ref)
            current = await self._binding(conn, iot_id, stream_type)
            if current == plan_id:
                return
            if current is not None:
                raise conflict(f"device stream is already in another {self._label}.")
            await conn.execute(insert(plan_devices).values(kind=self.kind, iot_id=iot_id, stream_type=stream_type,
                                                           plan_id=plan_id, tenant_id=tenant_id, created_ms=now_ms()))
            # SQLite reads without locks: the plan may have been deleted since it was read.
            # Now that this transaction holds the write lock, look again (rolls back if so).
            await self._load(conn, tenant_id, plan_id)

    async def _binding(self, conn: AsyncConnection, iot_id: str, stream_type: int) -> str | None:
        return (await conn.execute(select(plan_devices.c.plan_id).where(
            plan_devices.c.kind == self.kind, plan_devices.c.iot_id == iot_id,
            plan_devices.c.stream_type == stream_type))).scalar()

    async def remove_device(self, tenant_id: str, ref: DeviceRef, stream_type: int) -> None:
        async with self._db.begin() as conn:
            iot_id = await resolve_iot_id(conn, tenant_id, ref)
            res = await conn.execute(delete(plan_devices).where(
                plan_devices.c.kind == self.kind, plan_devices.c.iot_id == iot_id,
                plan_devices.c.stream_type == stream_type))
            if res.rowcount == 0:
                raise BusinessError("460", f"device stream is not in a {self._label}.")

    async def devices(self, tenant_id: str, plan_id: str, page: PageRequest) -> Page[PlanDevice]:
        where = (plan_devices.c.kind == self.kind, plan_devices.c.plan_id == plan_id)
        async with self._db.connect() as conn:
            await self._load(conn, tenant_id, plan_id)
            total = (await conn.execute(select(func.count()).select_from(plan_devices).where(*where))).scalar_one()
            rows = (await conn.execute(select(plan_devices.c.iot_id, plan_devices.c.stream_type).where(*where)
                    .order_by(plan_devices.c.created_ms, plan_devices.c.iot_id, plan_devices.c.stream_type)
                    .offset(page.offset).limit(page.size))).all()
        return Page([PlanDevice(r.iot_id, r.stream_type) for r in rows], total, page)

    async def plan_of_device(self, tenant_id: str, ref: DeviceRef, stream_type: int) -> tuple[Plan, TimeTemplate]:
        async with self._db.connect() as conn:
            iot_id = await resolve_iot_id(conn, tenant_id, ref)
            plan_id = await self._binding(conn, iot_id, stream_type)
            if plan_id is None:
                raise BusinessError("460", f"device stream is not in a {self._label}.")
            plan = await self._load(conn, tenant_id, plan_id)
            return plan, await load_template(conn, tenant_id, plan.template_id)
