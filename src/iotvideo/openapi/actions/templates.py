"""Time-template actions (seed section 5)."""

from __future__ import annotations

from typing import Any

from iotvideo.domain.schedule import TimeSection
from iotvideo.errors import invalid_parameter
from iotvideo.openapi.params import Params
from iotvideo.openapi.registry import Call, action
from iotvideo.openapi.shapes import page_data, page_request, template_body

SECTION_FIELDS = ("DayOfWeek", "Begin", "End")


def _int_field(obj: dict[str, str], field: str, lo: int, hi: int, i: int) -> int:
    """One integer field of section ``i``, checked by the shared decoder under its wire name."""
    name = f"TimeSections.{i}.{field}"
    value = Params({name: obj.get(field, "")}).int(name, min=lo, max=hi)
    if value is None:
        raise invalid_parameter(name, "is required")
    return value


def time_sections(p: Params) -> list[TimeSection] | None:
    """The TimeSections of a request, or None when the request has none."""
    if not p.has("TimeSections"):
        return None
    objs = p.objects("TimeSections", SECTION_FIELDS, max_items=7 * 48)
    return [TimeSection(_int_field(o, "DayOfWeek", 0, 6, i), _int_field(o, "Begin", 0, 86399, i),
                        _int_field(o, "End", 0, 86399, i)) for i, o in enumerate(objs, 1)]


def _all_day(p: Params, required: bool) -> bool | None:
    v = p.int("AllDay", required=required, min=0, max=1)
    return None if v is None else bool(v)


@action("CreateTimeTemplate")
async def create(call: Call) -> dict[str, Any]:
    p = call.params
    name = p.str("Name", required=True)
    all_day = _all_day(p, required=True)
    assert name is not None and all_day is not None
    tid = await call.services.templates.create(call.tenant_id, name, all_day, time_sections(p) or [])
    return {"Data": tid}


@action("UpdateTimeTemplate")
async def update(call: Call) -> None:
    p = call.params
    await call.services.templates.update(call.tenant_id, _template_id(p), p.str("Name"), _all_day(p, False),
                                         time_sections(p))


def _template_id(p: Params) -> str:
    tid = p.str("TemplateId", required=True, max_len=64)
    assert tid is not None
    return tid


@action("DeleteTimeTemplate")
async def delete(call: Call) -> None:
    await call.services.templates.delete(call.tenant_id, _template_id(call.params))


@action("QueryTimeTemplate")
async def query(call: Call) -> dict[str, Any]:
    page = await call.services.templates.list(call.tenant_id, page_request(call.params))
    return {"Data": page_data(page, template_body)}


@action("QueryTimeTemplateDetail")
async def detail(call: Call) -> dict[str, Any]:
    return {"Data": template_body(await call.services.templates.get(call.tenant_id, _template_id(call.params)))}
