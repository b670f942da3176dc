"""Time templates: when a plan is active (all week, or sections of days of the week).

Rules (docs/api.md, "Time templates"):
* names are 1..64 characters of any Unicode;
* ``AllDay=1`` means the whole week; sections given with it are ignored;
* ``AllDay=0`` needs at least one section; sections are validated and overlapping
  or touching sections of one day are merged (see ``schedule.normalize_sections``);
* each tenant has one default all-day template (``Default=1``) made with the tenant,
  which can be neither changed nor deleted;
* a template used by a record or event plan cannot be deleted.

Concurrency: on PostgreSQL a change takes a row lock on the template (``FOR UPDATE``)
and a plan that starts or stops using it a share lock (``FOR SHARE``), so a delete and
a new plan naming the template wait for each other and end as if one came first. On
SQLite the store runs every write alone (one writer, ``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import bindparam, delete, exists, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from iotvideo import ids
from iotvideo.domain.clock import now_ms
from iotvideo.domain.paging import Page, PageRequest
from iotvideo.domain.schedule import SectionError, TimeSection, normalize_sections
from iotvideo.errors import BusinessError, conflict, not_found
from iotvideo.store.schema import event_record_plans, record_plans, time_templates
from iotvideo.store.units import Query, Store, head_and_page, round_trips

NAME_MAX = 64
IN_USE = "template is used by a plan."

# The columns of a TimeTemplate, in the order template_from_row reads them.
_FIELDS = (time_templates.c.id, time_templates.c.name, time_templates.c.all_day, time_templates.c.is_default,
           time_templates.c.sections)
_ONE = select(*_FIELDS).where(time_templates.c.id == bindparam("template_id"),
                              time_templates.c.tenant_id == bindparam("tenant_id"))
_ONE_FAST = Query(_ONE)
_ONE_LOCKED = {"share": _ONE.with_for_update(read=True), "update": _ONE.with_for_update()}
_OF_TENANT = time_templates.c.tenant_id == bindparam("tenant_id")
_ORDER = (time_templates.c.created_ms, time_templates.c.id)
_COUNT = Query(select(func.count()).select_from(time_templates).where(_OF_TENANT))
_PAGE = Query(select(*_FIELDS).where(_OF_TENANT).order_by(*_ORDER).offset(bindparam("offset"))
              .limit(bindparam("limit")))
# both in one statement: (total, *_FIELDS) per template of the page
_LIST = Query(head_and_page(_COUNT.stmt, _FIELDS, (_OF_TENANT,), _ORDER))
_IN_USE = select(or_(exists().where(record_plans.c.template_id == bindparam("template_id")),
                     exists().where(event_record_plans.c.template_id == bindparam("template_id"))))


@dataclass(frozen=True)
class TimeTemplate:
    id: str
    name: str
    all_day: bool
    is_default: bool
    sections: tuple[TimeSection, ...]


def check_name(name: str) -> str:
    if not 1 <= len(name) <= NAME_MAX:
        raise BusinessError("460", f"Name must be 1..{NAME_MAX} characters.")
    return name


def _sections(all_day: bool, sections: list[TimeSection]) -> tuple[TimeSection, ...]:
    if all_day:
        return ()
    if not sections:
        raise BusinessError("460", "TimeSections is required when AllDay is 0.")
    try:
        return normalize_sections(sections)
    except SectionError as e:
        # name the field as the request did: TimeSections.1.End is the first section's End
        detail = str(e) if e.index is None else f"TimeSections.{e.index + 1}.{e.field} {e.detail}"
        raise BusinessError("460", f"invalid TimeSections: {detail}") from None


def _dump(sections: tuple[TimeSection, ...]) -> str:
    return json.dumps([[s.day_of_week, s.begin, s.end] for s in sections])


@functools.lru_cache(maxsize=4096)
def _load_sections(stored: str) -> tuple[TimeSection, ...]:
    """The sections column, parsed (a template is read far more often than changed)."""
    return tuple(TimeSection(d, b, e) for d, b, e in json.loads(stored))


def template_from_row(r: Sequence[Any]) -> TimeTemplate:
    """A TimeTemplate from a row of ``_FIELDS`` (id, name, all_day, is_default, sections)."""
    id_, name, all_day, is_default, sections = r
    return TimeTemplate(id_, name, bool(all_day), bool(is_default), _load_sections(sections))


Lock = Literal["share", "update"]


def load_template(c: Connection, tenant_id: str, template_id: str, lock: Lock | None = None) -> TimeTemplate:
    """The caller's template or 460 ``template not exist.``; ``lock`` takes a row lock
    (FOR SHARE / FOR UPDATE on PostgreSQL; SQLite has a single writer anyway)."""
    params = {"template_id": template_id, "tenant_id": tenant_id}
    row = _ONE_FAST.first(c, params) if lock is None else c.execute(_ONE_LOCKED[lock], params).first()
    if row is None:
        raise not_found("template")
    return template_from_row(row)


class Templates:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def create(self, tenant_id: str, name: str, all_day: bool, sections: list[TimeSection]) -> str:
        secs = _sections(all_day, sections)
        tid = ids.object_id()
        stmt = insert(time_templates).values(
            id=tid, tenant_id=tenant_id, name=check_name(name), all_day=all_day, is_default=False,
            sections=_dump(secs), created_ms=now_ms())
        await self._store.write(lambda c: c.execute(stmt))
        return tid

    async def update(self, tenant_id: str, template_id: str, name: str | None, all_day: bool | None,
                     sections: list[TimeSection] | None) -> None:
        """Changes the fields given; the others stay as they are."""

        def unit(c: Connection) -> None:
            cur = load_template(c, tenant_id, template_id, lock="update")
            if cur.is_default:
                raise conflict("default template can not be modified.")
            new_all_day = cur.all_day if all_day is None else all_day
            given = list(cur.sections) if sections is None else sections
            secs = _sections(new_all_day, given)
            c.execute(update(time_templates).where(time_templates.c.id == template_id).values(
                name=cur.name if name is None else check_name(name), all_day=new_all_day, sections=_dump(secs)))

        await self._store.write(unit)

    async def delete(self, tenant_id: str, template_id: str) -> None:
        """Refused for the default template and for a template a plan uses. A plan made
        with it concurrently waits for the row lock (PostgreSQL) and then finds it gone,
        or came first and makes this delete "used by a plan"."""

        def unit(c: Connection) -> None:
            cur = load_template(c, tenant_id, template_id, lock="update")
            if cur.is_default:
                raise conflict("default template can not be deleted.")
            if c.execute(_IN_USE, {"template_id": template_id}).scalar():
                raise conflict(IN_USE)
            c.execute(delete(time_templates).where(time_templates.c.id == template_id))

        try:
            await self._store.write(unit)
        except IntegrityError:  # the plans' foreign key, should a plan slip past the check
            raise conflict(IN_USE) from None

    async def get(self, tenant_id: str, template_id: str) -> TimeTemplate:
        return await self._store.read(lambda c: load_template(c, tenant_id, template_id))

    async def list(self, tenant_id: str, page: PageRequest) -> Page[TimeTemplate]:
        def unit(c: Connection) -> Page[TimeTemplate]:
            params = {"tenant_id": tenant_id, "offset": page.offset, "limit": page.size}
            if not round_trips(c):
                return Page([template_from_row(r) for r in _PAGE.all(c, params)], _COUNT.scalar(c, params), page)
            rows = _LIST.all(c, params)
            return Page([template_from_row(r[1:]) for r in rows if r[1] is not None], rows[0][0], page)

        return await self._store.read(unit)
