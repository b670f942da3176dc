"""Record-plan and event-record-plan actions (seed sections 6 and 7).

The two families have the same nine actions; they are registered from one set of
handlers parameterised by the plan kind, so the rules live once.
"""

from __future__ import annotations

from typing import Any

from iotvideo.domain.plans import MAX_RECORD_S, EventSettings, Plan, PlanDevice, Plans
from iotvideo.domain.templates import TimeTemplate
from iotvideo.openapi.params import Params
from iotvideo.openapi.registry import Call, action
from iotvideo.openapi.shapes import device_ref, page_data, page_request, stream_type, template_body


def _plans(call: Call, kind: str) -> Plans:
    return call.services.record_plans if kind == "record" else call.services.event_plans


def _plan_id(p: Params) -> str:
    v = p.str("PlanId", required=True, max_len=64)
    assert v is not None
    return v


def _durations(p: Params, required: bool) -> tuple[int | None, int | None]:
    rec = p.int("RecordDuration", required=required, min=1, max=MAX_RECORD_S)
    pre = p.int("PreRecordDuration", min=0, max=MAX_RECORD_S)
    return pre, rec


def plan_body(plan: Plan) -> dict[str, Any]:
    body: dict[str, Any] = {"Name": plan.name, "PlanId": plan.id, "TemplateId": plan.template_id}
    if plan.event is not None:
        body.update(EventType=plan.event.event_types, PreRecordDuration=plan.event.pre_record_s,
                    RecordDuration=plan.event.record_s)
    return body


def _detail(pt: tuple[Plan, TimeTemplate]) -> dict[str, Any]:
    plan, template = pt
    body = plan_body(plan)
    body.pop("EventType", None)
    if plan.event is not None:
        body["EventTypes"] = plan.event.event_types
    body["TemplateInfo"] = template_body(template)
    return {"Data": body}


def _device_item(d: PlanDevice) -> dict[str, Any]:
    return {"IotId": d.iot_id, "StreamType": d.stream_type}


def register(kind: str, prefix: str) -> None:
    """Registers the nine actions of one plan kind: Create{prefix}, …"""

    async def create(call: Call) -> dict[str, Any]:
        p = call.params
        name, template_id = p.str("Name", required=True), p.str("TemplateId", required=True, max_len=64)
        assert name is not None and template_id is not None
        event = None
        if kind == "event":
            pre, rec = _durations(p, required=True)
            assert rec is not None
            event = EventSettings(p.str("EventTypes", default="1") or "1", pre or 0, rec)
        return {"Data": await _plans(call, kind).create(call.tenant_id, name, template_id, event)}

    async def update(call: Call) -> None:
        p = call.params
        pre, rec = _durations(p, required=False) if kind == "event" else (None, None)
        await _plans(call, kind).update(call.tenant_id, _plan_id(p), p.str("Name"), p.str("TemplateId", max_len=64),
                                        p.str("EventTypes") if kind == "event" else None, pre, rec)

    async def delete(call: Call) -> None:
        await _plans(call, kind).delete(call.tenant_id, _plan_id(call.params))

    async def query(call: Call) -> dict[str, Any]:
        page = await _plans(call, kind).list(call.tenant_id, page_request(call.params))
        return {"Data": page_data(page, plan_body)}

    async def detail(call: Call) -> dict[str, Any]:
        return _detail(await _plans(call, kind).get(call.tenant_id, _plan_id(call.params)))

    async def add_device(call: Call) -> None:
        p = call.params
        await _plans(call, kind).add_device(call.tenant_id, _plan_id(p), device_ref(p), stream_type(p))

    async def delete_device(call: Call) -> None:
        p = call.params
        await _plans(call, kind).remove_device(call.tenant_id, device_ref(p), stream_type(p))

    async def by_plan(call: Call) -> dict[str, Any]:
        p = call.params
        page = await _plans(call, kind).devices(call.tenant_id, _plan_id(p), page_request(p))
        return {"Data": page_data(page, _device_item)}

    async def by_device(call: Call) -> dict[str, Any]:
        p = call.params
        return _detail(await _plans(call, kind).plan_of_device(call.tenant_id, device_ref(p), stream_type(p)))

    action(f"Create{prefix}")(create)
    action(f"Update{prefix}")(update)
    action(f"Delete{prefix}")(delete)
    action(f"Query{prefix}s")(query)
    action(f"Query{prefix}Detail")(detail)
    action(f"Add{prefix}Device")(add_device)
    action(f"Delete{prefix}Device")(delete_device)
    action(f"Query{prefix}DeviceByPlan")(by_plan)
    action(f"Query{prefix}DeviceByDevice")(by_device)


register("record", "RecordPlan")
register("event", "EventRecordPlan")
