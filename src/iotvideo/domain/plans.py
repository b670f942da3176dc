"""Record plans and event record plans, and which device streams are in them.

Both kinds share one set of rules (docs/api.md, "Plans"):
* a plan names a time template of the same tenant; an unknown one is refused;
* a device stream (IotId, StreamType) is in at most one plan of each kind: adding it
  to the plan it is already in succeeds and changes nothing; adding it to another plan
  of the same kind is refused (remove it first);
* deleting a plan releases its devices;
* event plans: ``EventTypes`` is "1" (motion), "2" (sound) or "1,2"; ``RecordDuration``
  1..3600 s includes ``PreRecordDuration`` 0..RecordDuration s.

Each plan row keeps ``device_count``, the number of its streams, changed in the same
transaction as its ``plan_devices`` rows (add, remove, delete device); a page of a
plan's devices reads it instead of counting 10,000 rows.

Concurrency on PostgreSQL: whatever changes a plan's streams or its row takes a row lock
on the plan first (``FOR NO KEY UPDATE``; deleting the plan takes the row itself) and
touches its ``plan_devices`` rows after, so concurrent calls wait for each other in one
order; a new plan, or a plan moved to another template, holds a share lock on the
template (see templates.py). On SQLite the store runs every write alone (one writer).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

from sqlalchemy import Table, bindparam, delete, func, insert, select, tuple_, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from iotvideo import ids
from iotvideo.domain.clock import now_ms
from iotvideo.domain.devices import DeviceRef, lock_plans, release_streams, resolve_iot_id
from iotvideo.domain.paging import Page, PageRequest
from iotvideo.domain.templates import TimeTemplate, check_name, load_template
from iotvideo.errors import BusinessError, conflict, not_found
from iotvideo.store.schema import plan_devices, plan_tables
from iotvideo.store.units import Query, Store, head_and_page, round_trips

PlanKind = Literal["record", "event"]
EVENT_TYPES = {"1": "1", "2": "2", "1,2": "1,2", "2,1": "1,2"}
MAX_RECORD_S = 3600
STREAM_TYPES = (0, 1)
# A page of a plan's devices walks at most this many index entries past a checkpoint.
PAGE_STRIDE = 128
MAX_CHECKPOINTED_PLANS = 10_000


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


class PlanDevice(NamedTuple):
    """A device stream in a plan (a tuple: a page holds up to 50 and is built per call)."""

    iot_id: str
    stream_type: int


class Plans:
    """One kind of plan ('record' or 'event') for every tenant."""

    def __init__(self, store: Store, kind: PlanKind) -> None:
        self._store = store
        self.kind: PlanKind = kind
        t: Table = plan_tables[kind]
        self._t = t
        self._label = "record plan" if kind == "record" else "event record plan"
        # statements built once (bind parameters are filled in per call)
        fields = [t.c.id, t.c.name, t.c.template_id]  # what _plan reads, in order
        if kind == "event":
            fields += [t.c.event_types, t.c.pre_record_s, t.c.record_s]
        of_tenant = t.c.tenant_id == bindparam("tenant_id")
        one = select(*fields).where(t.c.id == bindparam("plan_id"), of_tenant)
        self._one = Query(one)
        self._one_locked = one.with_for_update(key_share=True)
        self._counts = Query(select(t.c.device_count, t.c.devices_version)
                             .where(t.c.id == bindparam("plan_id"), of_tenant))
        self._count = Query(select(func.count()).select_from(t).where(of_tenant))
        self._page = Query(select(*fields).where(of_tenant).order_by(t.c.created_ms, t.c.id)
                           .offset(bindparam("offset")).limit(bindparam("limit")))
        # both in one statement: (total, *fields) per plan of the page
        self._list = Query(head_and_page(self._count.stmt, fields, (of_tenant,), (t.c.created_ms, t.c.id)))
        pd = plan_devices.c
        # The order of ix_plan_devices_kind_plan (kind, plan_id, created_ms, iot_id,
        # stream_type): pages are read from the index alone. A page starts either at
        # the plan's first stream or at a checkpoint (a key every PAGE_STRIDE streams,
        # see _page_rows), so OFFSET never walks more than PAGE_STRIDE index entries
        # once the checkpoint is known.
        key = (pd.created_ms, pd.iot_id, pd.stream_type)
        of_plan = (pd.kind == kind, pd.plan_id == bindparam("plan_id"))
        from_key = tuple_(*key) >= tuple_(bindparam("k_ms"), bindparam("k_iot_id"), bindparam("k_stream"))
        page = select(pd.iot_id, pd.stream_type).order_by(*key).offset(bindparam("offset")).limit(bindparam("limit"))
        self._devices_page = Query(page.where(*of_plan))
        self._devices_page_from = Query(page.where(*of_plan, from_key))
        # The usual page in ONE statement: (device_count, devices_version, iot_id,
        # stream_type) per stream, from the plan's start or from a known checkpoint.
        columns = (pd.iot_id, pd.stream_type)
        self._counted_page = Query(head_and_page(self._counts.stmt, columns, of_plan, key))
        self._counted_page_from = Query(head_and_page(self._counts.stmt, columns, (*of_plan, from_key), key))
        key_at = select(*key).order_by(*key).offset(bindparam("offset")).limit(1)
        self._key_at = Query(key_at.where(*of_plan))
        self._key_at_from = Query(key_at.where(*of_plan, from_key))
        # plan_id -> (devices_version, {n: key of the stream at offset n * PAGE_STRIDE})
        self._checkpoints: dict[str, tuple[int, dict[int, tuple[int, str, int]]]] = {}
        self._binding_q = Query(select(pd.plan_id).where(pd.kind == kind, pd.iot_id == bindparam("iot_id"),
                                                         pd.stream_type == bindparam("stream_type")))

    def _plan(self, r: Sequence[Any]) -> Plan:
        """A Plan from a row of the plan's fields (id, name, template_id[, event settings])."""
        event = EventSettings(r[3], r[4], r[5]) if self.kind == "event" else None
        return Plan(r[0], r[1], r[2], event)

    def _values(self, plan: Plan) -> dict[str, object]:
        v: dict[str, object] = {"name": plan.name, "template_id": plan.template_id}
        if plan.event is not None:
            v.update(event_types=plan.event.event_types, pre_record_s=plan.event.pre_record_s,
                     record_s=plan.event.record_s)
        return v

    def _load(self, c: Connection, tenant_id: str, plan_id: str, lock: bool = False) -> Plan:
        """The caller's plan or 460 ``… not exist.``; ``lock`` takes a row lock on it
        (PostgreSQL ``FOR NO KEY UPDATE``): a concurrent delete or change waits for this
        transaction."""
        params = {"plan_id": plan_id, "tenant_id": tenant_id}
        row = c.execute(self._one_locked, params).first() if lock else self._one.first(c, params)
        if row is None:
            raise not_found(self._label)
        return self._plan(row)

    async def create(self, tenant_id: str, name: str, template_id: str, event: EventSettings | None = None) -> str:
        plan = Plan(ids.object_id(), check_name(name), template_id,
                    check_event_settings(event) if self.kind == "event" and event else None)
        if self.kind == "event" and plan.event is None:
            raise BusinessError("460", "RecordDuration is required.")
        stmt = insert(self._t).values(id=plan.id, tenant_id=tenant_id, created_ms=now_ms(), device_count=0,
                                      **self._values(plan))

        def unit(c: Connection) -> None:
            load_template(c, tenant_id, template_id, lock="share")
            c.execute(stmt)

        try:
            await self._store.write(unit)
        except IntegrityError:  # the template's foreign key, should it vanish meanwhile
            raise not_found("template") from None
        return plan.id

    async def update(self, tenant_id: str, plan_id: str, name: str | None = None, template_id: str | None = None,
                     event_types: str | None = None, pre_record_s: int | None = None,
                     record_s: int | None = None) -> None:
        """Changes the fields given; the others stay as they are."""

        def unit(c: Connection) -> None:
            cur = self._load(c, tenant_id, plan_id, lock=True)
            new = replace(cur, name=cur.name if name is None else check_name(name),
                          template_id=template_id or cur.template_id)
            if new.template_id != cur.template_id:
                load_template(c, tenant_id, new.template_id, lock="share")
            if cur.event is not None:
                e = cur.event
                new = replace(new, event=check_event_settings(EventSettings(
                    e.event_types if event_types is None else event_types,
                    e.pre_record_s if pre_record_s is None else pre_record_s,
                    e.record_s if record_s is None else record_s)))
            c.execute(update(self._t).where(self._t.c.id == plan_id).values(**self._values(new)))

        try:
            await self._store.write(unit)
        except IntegrityError:  # the new template's foreign key, should it vanish meanwhile
            raise not_found("template") from None

    async def delete(self, tenant_id: str, plan_id: str) -> None:
        def unit(c: Connection) -> None:
            self._load(c, tenant_id, plan_id)
            # The plan row first: on PostgreSQL this waits for any transaction holding a
            # lock on it (adding a device, say), so the next statement also sees (and
            # releases) its device.
            c.execute(delete(self._t).where(self._t.c.id == plan_id))
            c.execute(delete(plan_devices).where(plan_devices.c.kind == self.kind, plan_devices.c.plan_id == plan_id))

        await self._store.write(unit)

    async def get(self, tenant_id: str, plan_id: str) -> tuple[Plan, TimeTemplate]:
        def unit(c: Connection) -> tuple[Plan, TimeTemplate]:
            plan = self._load(c, tenant_id, plan_id)
            return plan, load_template(c, tenant_id, plan.template_id)

        return await self._store.read(unit)

    async def list(self, tenant_id: str, page: PageRequest) -> Page[Plan]:
        def unit(c: Connection) -> Page[Plan]:
            params = {"tenant_id": tenant_id, "offset": page.offset, "limit": page.size}
            if not round_trips(c):
                return Page([self._plan(r) for r in self._page.all(c, params)], self._count.scalar(c, params), page)
            rows = self._list.all(c, params)
            return Page([self._plan(r[1:]) for r in rows if r[1] is not None], rows[0][0], page)

        return await self._store.read(unit)

    # --- devices in plans ---
    async def add_device(self, tenant_id: str, plan_id: str, ref: DeviceRef, stream_type: int) -> None:
        """Binds the stream to the plan. Concurrent calls for one stream are serialised by
        the primary key (PostgreSQL; SQLite runs one write at a time): the loser tries
        once more and then sees the winner's binding (same plan: success; another plan:
        refused), as if the calls had come one after the other."""
        try:
            await self._store.write(lambda c: self._add_device(c, tenant_id, plan_id, ref, stream_type))
        except IntegrityError:
            await self._store.write(lambda c: self._add_device(c, tenant_id, plan_id, ref, stream_type))

    def _add_device(self, c: Connection, tenant_id: str, plan_id: str, ref: DeviceRef, stream_type: int) -> None:
        self._load(c, tenant_id, plan_id, lock=True)
        iot_id = resolve_iot_id(c, tenant_id, ref)
        current = self._binding(c, iot_id, stream_type)
        if current == plan_id:
            return
        if current is not None:
            raise conflict(f"device stream is already in another {self._label}.")
        c.execute(insert(plan_devices).values(kind=self.kind, iot_id=iot_id, stream_type=stream_type,
                                              plan_id=plan_id, tenant_id=tenant_id, created_ms=now_ms()))
        t = self._t
        c.execute(update(t).where(t.c.id == plan_id).values(device_count=t.c.device_count + 1,
                                                             devices_version=t.c.devices_version + 1))

    def _binding(self, c: Connection, iot_id: str, stream_type: int) -> str | None:
        return self._binding_q.scalar(c, {"iot_id": iot_id, "stream_type": stream_type})  # type: ignore[no-any-return]

    async def remove_device(self, tenant_id: str, ref: DeviceRef, stream_type: int) -> None:
        def unit(c: Connection) -> None:
            iot_id = resolve_iot_id(c, tenant_id, ref)
            pd = plan_devices.c
            # Lock the plan, then delete the binding if it is still in that plan (on
            # PostgreSQL it may have moved meanwhile: look again).
            for _ in range(3):
                plan_id = self._binding(c, iot_id, stream_type)
                if plan_id is None:
                    break
                lock_plans(c, {(self.kind, plan_id)})
                if release_streams(c, pd.kind == self.kind, pd.iot_id == iot_id, pd.stream_type == stream_type,
                                   pd.plan_id == plan_id):
                    return
            raise BusinessError("460", f"device stream is not in a {self._label}.")

        await self._store.write(unit)

    async def devices(self, tenant_id: str, plan_id: str, page: PageRequest) -> Page[PlanDevice]:
        def unit(c: Connection) -> Page[PlanDevice]:
            # With round trips: usually one statement, the plan's counters and the page,
            # from the plan's start or from a checkpoint known for the plan's current
            # version. On SQLite two plain statements are cheaper.
            n = page.offset // PAGE_STRIDE
            params: dict[str, Any] = {"plan_id": plan_id, "tenant_id": tenant_id, "limit": page.size}
            entry = self._checkpoints.get(plan_id)
            key = entry[1].get(n) if n and entry is not None else None
            if (n == 0 or key is not None) and round_trips(c):
                if key is None:
                    rows = self._counted_page.all(c, {**params, "offset": page.offset})
                else:
                    rows = self._counted_page_from.all(c, {**params, "k_ms": key[0], "k_iot_id": key[1],
                                                           "k_stream": key[2], "offset": page.offset - n * PAGE_STRIDE})
                if not rows:
                    raise not_found(self._label)
                total, version = rows[0][0], rows[0][1]
                if key is None or (entry is not None and version == entry[0]):
                    items = [PlanDevice(r[2], r[3]) for r in rows] if rows[0][2] is not None else []
                    return Page(items, total, page)
            # SQLite, or a checkpoint to find (or the plan changed since it was found).
            counts = self._counts.first(c, {"plan_id": plan_id, "tenant_id": tenant_id})
            if counts is None:
                raise not_found(self._label)
            total, version = counts
            rows: Sequence[Any] = ()
            if page.offset < total:
                rows = self._page_rows(c, plan_id, version, page.offset, page.size)
            return Page(list(map(PlanDevice._make, rows)), total, page)  # rows: (iot_id, stream_type)

        return await self._store.read(unit)

    def _page_rows(self, c: Connection, plan_id: str, version: int, offset: int, limit: int) -> Sequence[Any]:
        """The streams of the plan at ``offset``, in the listing order. Past the first
        PAGE_STRIDE streams, the page starts from the checkpoint below it: the key of
        the stream at offset n * PAGE_STRIDE, remembered for the plan's
        ``devices_version`` (every change of the plan's streams moves it on, on any
        node), so a deep page is an index seek plus a walk of < PAGE_STRIDE entries
        instead of a walk of ``offset`` entries. An unknown checkpoint is found from the
        nearest known one below it (one walk) and kept."""
        n = offset // PAGE_STRIDE
        if n == 0:
            return self._devices_page.all(c, {"plan_id": plan_id, "offset": offset, "limit": limit})
        entry = self._checkpoints.get(plan_id)
        if entry is None or entry[0] != version:
            if len(self._checkpoints) >= MAX_CHECKPOINTED_PLANS:
                self._checkpoints.clear()
            entry = self._checkpoints[plan_id] = (version, {})
        known = entry[1]
        key = known.get(n)
        if key is None:
            below = max((m for m in known if m < n), default=0)
            if below:
                k = known[below]
                found = self._key_at_from.first(c, {"plan_id": plan_id, "k_ms": k[0], "k_iot_id": k[1],
                                                    "k_stream": k[2], "offset": (n - below) * PAGE_STRIDE})
            else:
                found = self._key_at.first(c, {"plan_id": plan_id, "offset": n * PAGE_STRIDE})
            if found is None:  # fewer streams than the count said: changed meanwhile (PostgreSQL)
                return []
            key = known[n] = (found[0], found[1], found[2])
        return self._devices_page_from.all(c, {
            "plan_id": plan_id, "k_ms": key[0], "k_iot_id": key[1], "k_stream": key[2],
            "offset": offset - n * PAGE_STRIDE, "limit": limit})

    async def plan_of_device(self, tenant_id: str, ref: DeviceRef, stream_type: int) -> tuple[Plan, TimeTemplate]:
        def unit(c: Connection) -> tuple[Plan, TimeTemplate]:
            iot_id = resolve_iot_id(c, tenant_id, ref)
            plan_id = self._binding(c, iot_id, stream_type)
            if plan_id is None:
                raise BusinessError("460", f"device stream is not in a {self._label}.")
            plan = self._load(c, tenant_id, plan_id)
            return plan, load_template(c, tenant_id, plan.template_id)

        return await self._store.read(unit)
