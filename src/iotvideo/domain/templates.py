"""Time templates: when a plan is active (all week, or sections of days of the week).

Rules (docs/api.md, "Time templates"):
* names are 1..64 characters of any Unicode;
* ``AllDay=1`` means the whole week; sections given with it are ignored;
* ``AllDay=0`` needs at least one section; sections are validated and overlapping
  or touching sections of one day are merged (see ``schedule.normalize_sections``);
* each tenant has one default all-day template (``Default=1``) made with the tenant,
  which can be neither changed nor deleted;
* a template used by a record or event plan cannot be deleted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import delete, exists, func, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from iotvideo import ids
from iotvideo.domain.clock import now_ms
from iotvideo.domain.paging import Page, PageRequest
from iotvideo.domain.schedule import SectionError, TimeSection, normalize_sections
from iotvideo.errors import BusinessError, conflict, not_found
from iotvideo.store.schema import event_record_plans, record_plans, time_templates

NAME_MAX = 64
IN_USE = "template is used by a plan."


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


def template_from_row(r: Row) -> TimeTemplate:  # type: ignore[type-arg]
    secs = tuple(TimeSection(d, b, e) for d, b, e in json.loads(r.sections))
    return TimeTemplate(r.id, r.name, bool(r.all_day), bool(r.is_default), secs)


Lock = Literal["share", "update"]


async def load_template(conn: AsyncConnection, tenant_id: str, template_id: str,
                        lock: Lock | None = None) -> TimeTemplate:
    """The caller's template or 460 ``template not exist.``; ``lock`` takes a row lock
    (FOR SHARE / FOR UPDATE on PostgreSQL; SQLite has a single writer anyway)."""
    q = select(time_templates).where(time_templates.c.id == template_id, time_templates.c.tenant_id == tenant_id)
    if lock is not None:
        q = q.with_for_update(read=lock == "share")
    row = (await conn.execute(q)).first()
    if row is None:
        raise not_found("template")
    return template_from_row(row)


class Templates:
    def __init__(self, db: AsyncEngine) -> None:
        self._db = db

    async def create(self, tenant_id: str, name: str, all_day: bool, sections: list[TimeSection]) -> str:
        secs = _sections(all_day, sections)
        tid = ids.object_id()
        async with self._db.begin() as conn:
            await conn.execute(insert(time_templates).values(
                id=tid, tenant_id=tenant_id, name=check_name(name), all_day=all_day, is_default=False,
                sections=_dump(secs), created_ms=now_ms()))
        return tid

    async def update(self, tenant_id: str, template_id: str, name: str | None, all_day: bool | None,
                     sections: list[TimeSection] | None) -> None:
        """Changes the fields given; the others stay as they are."""
        async with self._db.begin() as conn:
            cur = await load_template(conn, tenant_id, template_id, lock="update")
            if cur.is_default:
                raise conflict("default template can not be modified.")
            new_all_day = cur.all_day if all_day is None else all_day
            given = list(cur.sections) if sections is None else sections
            secs = _sections(new_all_day, given)
            res = await conn.execute(update(time_templates).where(time_templates.c.id == template_id).values(
                name=cur.name if name is None else check_name(name), all_day=new_all_day, sections=_dump(secs)))
            if res.rowcount == 0:  # deleted since it was read (SQLite reads without locks)
                raise not_found("template")

    async def delete(self, tenant_id: str, template_id: str) -> None:
        """Refused for the default template and for a template a plan uses. A plan made
        with it concurrently either waits for the row lock (PostgreSQL) or makes the
        delete violate the plans' foreign key: both end as "used by a plan"."""
        try:
            async with self._db.begin() as conn:
                cur = await load_template(conn, tenant_id, template_id, lock="update")
                if cur.is_default:
                    raise conflict("default template can not be deleted.")
                used = select(or_(
                    exists().where(record_plans.c.template_id == template_id),
                    exists().where(event_record_plans.c.template_id == template_id)))
                if (await conn.execute(used)).scalar():
                    raise conflict(IN_USE)
                await conn.execute(delete(time_templates).where(time_templates.c.id == template_id))
        except IntegrityError:
            raise conflict(IN_USE) from None

    async def get(self, tenant_id: str, template_id: str) -> TimeTemplate:
        async with self._db.connect() as conn:
            return await load_template(conn, tenant_id, template_id)

    async def list(self, tenant_id: str, page: PageRequest) -> Page[TimeTemplate]:
        where = time_templates.c.tenant_id == tenant_id
        async with self._db.connect() as conn:
            total = (await conn.execute(select(func.count()).select_from(time_templates).where(where))).scalar_one()
            rows = (await conn.execute(select(time_templates).where(where)
                    .order_by(time_templates.c.created_ms, time_templates.c.id)
                    .offset(page.offset).limit(page.size))).all()
        return Page([template_from_row(r) for r in rows], total, page)
