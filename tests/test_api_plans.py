"""The nine record-plan and nine event-record-plan actions through both SDK generations:
plan CRUD, device streams in plans, and every rule (one plan per stream and kind,
idempotent re-add, release on delete, unknown IDs, event settings, device addressing,
paging, tenancy). Every refusal is checked to have changed nothing."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from alibabacloud_linkvisual20180120 import models as lv
from alibabacloud_linkvisual20180120.client import Client
from api_support import business_error, default_template_id, gateway_error, make_devices, ok, old_req
from conftest import OldSdk, new_config


@dataclass(frozen=True)
class Kind:
    prefix: str                      # RecordPlan | EventRecordPlan
    label: str                       # as in the "… not exist." messages
    settings: dict[str, Any] = field(default_factory=dict)  # what Create needs beyond Name/TemplateId

    @property
    def event(self) -> bool:
        return self.prefix == "EventRecordPlan"


RECORD = Kind("RecordPlan", "record plan")
EVENT = Kind("EventRecordPlan", "event record plan",
             {"EventTypes": "1,2", "PreRecordDuration": 5, "RecordDuration": 30})
KINDS = [pytest.param(RECORD, id="record"), pytest.param(EVENT, id="event")]


def call(sdk: OldSdk, action: str, **params: Any) -> Any:
    return sdk.call(old_req(action, **params))


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def new_call(client: Client, action: str, **params: Any) -> Any:
    """A new-SDK call by action name, e.g. ``new_call(c, "CreateRecordPlan", name=…)``."""
    request = getattr(lv, f"{action}Request")(**params)
    return getattr(client, snake(action))(request).body


def create_plan(sdk: OldSdk, kind: Kind, name: str = "plan", template_id: str | None = None, **over: Any) -> str:
    params = {"Name": name, "TemplateId": template_id or default_template_id(sdk), **kind.settings, **over}
    plan_id = ok(call(sdk, f"Create{kind.prefix}", **params))
    assert isinstance(plan_id, str) and plan_id
    return plan_id


def dev(d: dict[str, str], by: str = "iot") -> dict[str, str]:
    """Device addressing: by IotId, or by ProductKey + DeviceName."""
    return {"IotId": d["IotId"]} if by == "iot" else {"ProductKey": d["ProductKey"], "DeviceName": d["DeviceName"]}


def devices_of(sdk: OldSdk, kind: Kind, plan_id: str) -> list[tuple[str, int]]:
    data = ok(call(sdk, f"Query{kind.prefix}DeviceByPlan", PlanId=plan_id, PageSize=50))
    return [(x["IotId"], x["StreamType"]) for x in data["List"]]


def plan_of(sdk: OldSdk, kind: Kind, d: dict[str, str], stream: int = 0) -> str | None:
    body = call(sdk, f"Query{kind.prefix}DeviceByDevice", **dev(d), StreamType=stream)
    if body["Success"]:
        return str(body["Data"]["PlanId"])
    business_error(body, "460", f"device stream is not in a {kind.label}.")
    return None


def state(sdk: OldSdk, kind: Kind, devices: list[dict[str, str]] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    """Everything observable about a tenant's plans of one kind, to compare before/after."""
    plans = ok(call(sdk, f"Query{kind.prefix}s", PageSize=50))
    return {
        "plans": plans,
        "details": {p["PlanId"]: ok(call(sdk, f"Query{kind.prefix}Detail", PlanId=p["PlanId"])) for p in plans["List"]},
        "members": {p["PlanId"]: devices_of(sdk, kind, p["PlanId"]) for p in plans["List"]},
        "bindings": {(d["IotId"], s): plan_of(sdk, kind, d, s) for d in devices for s in (0, 1)},
    }


# --- plan CRUD --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_old_sdk_plan_crud(old_sdk, kind):
    default_tid = default_template_id(old_sdk)
    tpl = ok(call(old_sdk, "QueryTimeTemplateDetail", TemplateId=default_tid))
    pid = create_plan(old_sdk, kind, "前门 🚪", default_tid)

    expected = {"Name": "前门 🚪", "PlanId": pid, "TemplateId": default_tid, "TemplateInfo": tpl}
    if kind.event:  # EventTypes beside the SDK's fields (docs/api.md)
        expected.update(PreRecordDuration=5, RecordDuration=30, EventTypes="1,2")
    got = ok(call(old_sdk, f"Query{kind.prefix}Detail", PlanId=pid))
    assert {k: got[k] for k in expected} == expected

    listed = ok(call(old_sdk, f"Query{kind.prefix}s"))
    assert (listed["Page"], listed["PageSize"], listed["PageCount"], listed["Total"]) == (1, 10, 1, 1)
    item = {"Name": "前门 🚪", "PlanId": pid, "TemplateId": default_tid}
    if kind.event:
        item.update(EventType="1,2", PreRecordDuration=5, RecordDuration=30)
    assert listed["List"] == [item]

    # update the name and the template (and the event settings)
    sections = [{"DayOfWeek": 1, "Begin": 0, "End": 3600}]
    other_tid = ok(call(old_sdk, "CreateTimeTemplate", Name="mon", AllDay=0, TimeSectionss=sections))
    changes: dict[str, Any] = {"Name": "back door", "TemplateId": other_tid}
    if kind.event:
        changes.update(EventTypes="2", PreRecordDuration=0, RecordDuration=60)
    ok(call(old_sdk, f"Update{kind.prefix}", PlanId=pid, **changes))
    got = ok(call(old_sdk, f"Query{kind.prefix}Detail", PlanId=pid))
    assert got["Name"] == "back door" and got["TemplateId"] == other_tid
    assert got["TemplateInfo"] == ok(call(old_sdk, "QueryTimeTemplateDetail", TemplateId=other_tid))
    assert got["TemplateInfo"]["TimeSectionList"] == sections
    if kind.event:
        assert (got["PreRecordDuration"], got["RecordDuration"], got["EventTypes"]) == (0, 60, "2")
        assert ok(call(old_sdk, f"Query{kind.prefix}s"))["List"][0]["EventType"] == "2"

    # an update naming only some fields keeps the others
    ok(call(old_sdk, f"Update{kind.prefix}", PlanId=pid, Name="renamed"))
    again = ok(call(old_sdk, f"Query{kind.prefix}Detail", PlanId=pid))
    assert again == {**got, "Name": "renamed"}

    ok(call(old_sdk, f"Delete{kind.prefix}", PlanId=pid))
    business_error(call(old_sdk, f"Query{kind.prefix}Detail", PlanId=pid), "460", f"{kind.label} not exist.")
    empty = ok(call(old_sdk, f"Query{kind.prefix}s"))
    assert (empty["List"], empty["Total"], empty["PageCount"], empty["Page"]) == ([], 0, 0, 1)
    # the template is free again
    ok(call(old_sdk, "DeleteTimeTemplate", TemplateId=other_tid))


@pytest.mark.parametrize("kind", KINDS)
def test_new_sdk_all_nine_actions(new_lv, old_sdk, kind):
    """Every response of the nine actions parses into the new SDK's models."""
    p = kind.prefix
    d1, d2 = make_devices(old_sdk, 2)
    tid = default_template_id(old_sdk)
    extra = {"event_types": "1", "pre_record_duration": 3, "record_duration": 20} if kind.event else {}

    created = new_call(new_lv, f"Create{p}", name="n", template_id=tid, **extra)
    pid = ok(created)
    assert isinstance(pid, str)

    detail = ok(new_call(new_lv, f"Query{p}Detail", plan_id=pid))
    assert isinstance(detail, getattr(lv, f"Query{p}DetailResponseBodyData"))
    assert (detail.plan_id, detail.name, detail.template_id) == (pid, "n", tid)
    info = detail.template_info
    assert isinstance(info, getattr(lv, f"Query{p}DetailResponseBodyDataTemplateInfo"))
    assert (info.template_id, info.default, info.all_day, info.time_section_list) == (tid, 1, 1, [])
    if kind.event:
        assert (detail.pre_record_duration, detail.record_duration) == (3, 20)

    page = ok(new_call(new_lv, f"Query{p}s", current_page=1, page_size=10))
    assert isinstance(page, getattr(lv, f"Query{p}sResponseBodyData"))
    assert (page.page, page.page_size, page.page_count, page.total) == (1, 10, 1, 1)
    [item] = page.list
    assert (item.plan_id, item.name, item.template_id) == (pid, "n", tid)
    if kind.event:
        assert (item.event_type, item.pre_record_duration, item.record_duration) == ("1", 3, 20)

    upd = {"event_types": "1,2", "record_duration": 25} if kind.event else {}
    ok(new_call(new_lv, f"Update{p}", plan_id=pid, name="m", template_id=tid, **upd))
    detail = ok(new_call(new_lv, f"Query{p}Detail", plan_id=pid))
    assert detail.name == "m"
    if kind.event:
        assert (detail.pre_record_duration, detail.record_duration) == (3, 25)
        assert ok(new_call(new_lv, f"Query{p}s")).list[0].event_type == "1,2"

    ok(new_call(new_lv, f"Add{p}Device", plan_id=pid, iot_id=d1["IotId"], stream_type=0))
    ok(new_call(new_lv, f"Add{p}Device", plan_id=pid, product_key=d2["ProductKey"],
                device_name=d2["DeviceName"], stream_type=1))
    members = ok(new_call(new_lv, f"Query{p}DeviceByPlan", plan_id=pid, current_page=1, page_size=10))
    assert isinstance(members, getattr(lv, f"Query{p}DeviceByPlanResponseBodyData"))
    assert (members.page, members.page_size, members.page_count, members.total) == (1, 10, 1, 2)
    assert sorted((m.iot_id, m.stream_type) for m in members.list) == sorted([(d1["IotId"], 0), (d2["IotId"], 1)])

    by_dev = ok(new_call(new_lv, f"Query{p}DeviceByDevice", product_key=d2["ProductKey"],
                         device_name=d2["DeviceName"], stream_type=1))
    assert isinstance(by_dev, getattr(lv, f"Query{p}DeviceByDeviceResponseBodyData"))
    assert (by_dev.plan_id, by_dev.name, by_dev.template_id, by_dev.template_info.template_id) == (pid, "m", tid, tid)
    if kind.event:
        assert (by_dev.pre_record_duration, by_dev.record_duration) == (3, 25)
    missing = new_call(new_lv, f"Query{p}DeviceByDevice", iot_id=d2["IotId"], stream_type=0)
    business_error(missing, "460", f"device stream is not in a {kind.label}.")

    ok(new_call(new_lv, f"Delete{p}Device", iot_id=d1["IotId"], stream_type=0))
    members = ok(new_call(new_lv, f"Query{p}DeviceByPlan", plan_id=pid))
    assert [(m.iot_id, m.stream_type) for m in members.list] == [(d2["IotId"], 1)]

    ok(new_call(new_lv, f"Delete{p}", plan_id=pid))
    business_error(new_call(new_lv, f"Query{p}Detail", plan_id=pid), "460", f"{kind.label} not exist.")
    business_error(new_call(new_lv, f"Query{p}DeviceByDevice", iot_id=d2["IotId"], stream_type=1), "460")
    assert gateway_error(lambda: new_call(new_lv, f"Query{p}Detail")) == "MissingParameter"
    assert gateway_error(lambda: new_call(new_lv, f"Query{p}s", page_size=51)) == "InvalidParameter"


@pytest.mark.parametrize("kind", KINDS)
def test_plan_refusals_change_nothing(old_sdk, kind):
    p = kind.prefix
    [d] = make_devices(old_sdk, 1)
    pid = create_plan(old_sdk, kind, "keep")
    ok(call(old_sdk, f"Add{p}Device", PlanId=pid, **dev(d)))
    before = state(old_sdk, kind, [d])
    not_exist = f"{kind.label} not exist."

    for unknown in ("nope", "0" * 32):
        business_error(call(old_sdk, f"Update{p}", PlanId=unknown, Name="x"), "460", not_exist)
        business_error(call(old_sdk, f"Delete{p}", PlanId=unknown), "460", not_exist)
        business_error(call(old_sdk, f"Query{p}Detail", PlanId=unknown), "460", not_exist)
        business_error(call(old_sdk, f"Add{p}Device", PlanId=unknown, **dev(d), StreamType=1), "460", not_exist)
        business_error(call(old_sdk, f"Query{p}DeviceByPlan", PlanId=unknown), "460", not_exist)
    # the other kind's plan ID is unknown to this kind
    other = RECORD if kind.event else EVENT
    other_pid = create_plan(old_sdk, other, "other kind")
    business_error(call(old_sdk, f"Query{p}Detail", PlanId=other_pid), "460", not_exist)
    business_error(call(old_sdk, f"Add{p}Device", PlanId=other_pid, **dev(d), StreamType=1), "460", not_exist)

    business_error(call(old_sdk, f"Create{p}", Name="x", TemplateId="nope", **kind.settings), "460",
                   "template not exist.")
    business_error(call(old_sdk, f"Update{p}", PlanId=pid, TemplateId="nope"), "460", "template not exist.")
    business_error(call(old_sdk, f"Create{p}", Name="n" * 65, TemplateId=default_template_id(old_sdk),
                        **kind.settings), "460")
    business_error(call(old_sdk, f"Update{p}", PlanId=pid, Name="🎥" * 65), "460")

    assert gateway_error(lambda: call(old_sdk, f"Create{p}", TemplateId="t", **kind.settings)) == "MissingParameter"
    assert gateway_error(lambda: call(old_sdk, f"Create{p}", Name="x", **kind.settings)) == "MissingParameter"
    assert gateway_error(lambda: call(old_sdk, f"Update{p}", Name="x")) == "MissingParameter"
    assert gateway_error(lambda: call(old_sdk, f"Delete{p}")) == "MissingParameter"
    assert gateway_error(lambda: call(old_sdk, f"Query{p}Detail", PlanId="p" * 65)) == "InvalidParameter"
    assert gateway_error(lambda: call(old_sdk, f"Query{p}DeviceByPlan")) == "MissingParameter"
    for bad in ({"PageSize": 51}, {"PageSize": 0}, {"CurrentPage": 0}):
        assert gateway_error(lambda: call(old_sdk, f"Query{p}s", **bad)) == "InvalidParameter"
        assert gateway_error(lambda: call(old_sdk, f"Query{p}DeviceByPlan", PlanId=pid, **bad)) == "InvalidParameter"

    assert state(old_sdk, kind, [d]) == before
    ok(call(old_sdk, f"Delete{other.prefix}", PlanId=other_pid))


def test_event_plan_settings(old_sdk):
    tid = default_template_id(old_sdk)

    def create(**s: Any) -> Any:
        return call(old_sdk, "CreateEventRecordPlan", Name="e", TemplateId=tid, **s)

    def settings(pid: str) -> tuple[str, int, int]:
        [item] = [x for x in ok(call(old_sdk, "QueryEventRecordPlans", PageSize=50))["List"] if x["PlanId"] == pid]
        return item["EventType"], item["PreRecordDuration"], item["RecordDuration"]

    for types, expected in (("1", "1"), ("2", "2"), ("1,2", "1,2"), ("2,1", "1,2")):
        pid = ok(create(EventTypes=types, RecordDuration=10))
        assert settings(pid) == (expected, 0, 10)
        ok(call(old_sdk, "DeleteEventRecordPlan", PlanId=pid))
    pid = ok(create(RecordDuration=10))  # EventTypes defaults to motion
    assert settings(pid) == ("1", 0, 10)
    edge = ok(create(EventTypes="2", PreRecordDuration=3600, RecordDuration=3600))  # pre-record == all of it
    assert settings(edge) == ("2", 3600, 3600)
    before = state(old_sdk, EVENT)

    for types in ("3", "0", "1,3", "motion", "1,2,3", ","):
        business_error(create(EventTypes=types, RecordDuration=10), "460")
    business_error(create(PreRecordDuration=11, RecordDuration=10), "460")
    assert gateway_error(lambda: create(EventTypes="1")) == "MissingParameter"
    for bad in ({"RecordDuration": 0}, {"RecordDuration": 3601}, {"RecordDuration": "ten"},
                {"RecordDuration": 10, "PreRecordDuration": -1}):
        assert gateway_error(lambda: create(**bad)) == "InvalidParameter", bad
    # updates are checked against the settings they keep
    business_error(call(old_sdk, "UpdateEventRecordPlan", PlanId=pid, EventTypes="3"), "460")
    business_error(call(old_sdk, "UpdateEventRecordPlan", PlanId=pid, PreRecordDuration=11), "460")
    business_error(call(old_sdk, "UpdateEventRecordPlan", PlanId=edge, RecordDuration=100), "460")
    assert state(old_sdk, EVENT) == before

    ok(call(old_sdk, "UpdateEventRecordPlan", PlanId=pid, PreRecordDuration=10))
    assert settings(pid) == ("1", 10, 10)
    ok(call(old_sdk, "UpdateEventRecordPlan", PlanId=pid, EventTypes="1,2", RecordDuration=60))
    assert settings(pid) == ("1,2", 10, 60)


# --- device streams in plans ------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_a_stream_is_in_at_most_one_plan(old_sdk, kind):
    p = kind.prefix
    d1, d2 = make_devices(old_sdk, 2)
    a, b = create_plan(old_sdk, kind, "A"), create_plan(old_sdk, kind, "B")

    ok(call(old_sdk, f"Add{p}Device", PlanId=a, **dev(d1)))  # StreamType defaults to 0
    assert devices_of(old_sdk, kind, a) == [(d1["IotId"], 0)]
    # adding it again to the same plan, by either address, is a no-op success
    ok(call(old_sdk, f"Add{p}Device", PlanId=a, **dev(d1, "pk"), StreamType=0))
    ok(call(old_sdk, f"Add{p}Device", PlanId=a, **dev(d1), StreamType=0))
    assert devices_of(old_sdk, kind, a) == [(d1["IotId"], 0)]

    before = state(old_sdk, kind, [d1, d2])
    business_error(call(old_sdk, f"Add{p}Device", PlanId=b, **dev(d1), StreamType=0), "460")
    business_error(call(old_sdk, f"Add{p}Device", PlanId=b, **dev(d1, "pk"), StreamType=0), "460")
    assert state(old_sdk, kind, [d1, d2]) == before
    assert plan_of(old_sdk, kind, d1, 0) == a and devices_of(old_sdk, kind, b) == []

    # the other stream of the same device is a separate thing
    ok(call(old_sdk, f"Add{p}Device", PlanId=b, **dev(d1, "pk"), StreamType=1))
    assert plan_of(old_sdk, kind, d1, 1) == b and plan_of(old_sdk, kind, d1, 0) == a
    # move: remove from A, then B accepts it
    ok(call(old_sdk, f"Delete{p}Device", **dev(d1, "pk"), StreamType=0))
    assert plan_of(old_sdk, kind, d1, 0) is None
    before = state(old_sdk, kind, [d1, d2])
    business_error(call(old_sdk, f"Delete{p}Device", **dev(d1), StreamType=0), "460",
                   f"device stream is not in a {kind.label}.")
    assert state(old_sdk, kind, [d1, d2]) == before
    ok(call(old_sdk, f"Add{p}Device", PlanId=b, **dev(d1), StreamType=0))
    assert sorted(devices_of(old_sdk, kind, b)) == sorted([(d1["IotId"], 0), (d1["IotId"], 1)])
    assert devices_of(old_sdk, kind, a) == []


@pytest.mark.parametrize("kind", KINDS)
def test_device_addressing(old_sdk, kind):
    p = kind.prefix
    d1, d2 = make_devices(old_sdk, 2)
    pid = create_plan(old_sdk, kind)
    # IotId wins over ProductKey + DeviceName when both are given
    ok(call(old_sdk, f"Add{p}Device", PlanId=pid, IotId=d1["IotId"], ProductKey=d2["ProductKey"],
            DeviceName=d2["DeviceName"], StreamType=0))
    assert devices_of(old_sdk, kind, pid) == [(d1["IotId"], 0)]
    # IotInstanceId may be sent and changes nothing
    ok(call(old_sdk, f"Add{p}Device", PlanId=pid, **dev(d2, "pk"), StreamType=1, IotInstanceId="iot-cn-xyz"))
    by_pk = ok(call(old_sdk, f"Query{p}DeviceByDevice", **dev(d2, "pk"), StreamType=1))
    by_iot = ok(call(old_sdk, f"Query{p}DeviceByDevice", **dev(d2), StreamType=1))
    assert by_pk == by_iot and by_pk["PlanId"] == pid
    before = state(old_sdk, kind, [d1, d2])

    ghost = {"IotId": "no-such-device"}
    ghost_pk = {"ProductKey": d1["ProductKey"], "DeviceName": "nobody"}
    for addr in (ghost, ghost_pk):
        business_error(call(old_sdk, f"Add{p}Device", PlanId=pid, **addr), "403", "tenant auth error")
        business_error(call(old_sdk, f"Delete{p}Device", **addr), "403", "tenant auth error")
        business_error(call(old_sdk, f"Query{p}DeviceByDevice", **addr), "403", "tenant auth error")
    # a device needs IotId or both ProductKey and DeviceName
    for addr in ({}, {"ProductKey": d1["ProductKey"]}, {"DeviceName": d1["DeviceName"]}):
        assert gateway_error(lambda: call(old_sdk, f"Add{p}Device", PlanId=pid, **addr)) == "MissingParameter"
        assert gateway_error(lambda: call(old_sdk, f"Delete{p}Device", **addr)) == "MissingParameter"
        assert gateway_error(lambda: call(old_sdk, f"Query{p}DeviceByDevice", **addr)) == "MissingParameter"
    for st in (2, -1, "main"):
        assert gateway_error(lambda: call(old_sdk, f"Add{p}Device", PlanId=pid, **dev(d1), StreamType=st)) \
            == "InvalidParameter"
    assert gateway_error(lambda: call(old_sdk, f"Add{p}Device", **dev(d1))) == "MissingParameter"
    assert state(old_sdk, kind, [d1, d2]) == before


def test_record_and_event_plans_are_independent(old_sdk):
    [d] = make_devices(old_sdk, 1)
    rec, ev = create_plan(old_sdk, RECORD, "r"), create_plan(old_sdk, EVENT, "e")
    ok(call(old_sdk, "AddRecordPlanDevice", PlanId=rec, **dev(d)))
    ok(call(old_sdk, "AddEventRecordPlanDevice", PlanId=ev, **dev(d)))  # same stream, other kind: fine
    assert plan_of(old_sdk, RECORD, d) == rec and plan_of(old_sdk, EVENT, d) == ev
    ok(call(old_sdk, "DeleteRecordPlan", PlanId=rec))
    assert plan_of(old_sdk, RECORD, d) is None and plan_of(old_sdk, EVENT, d) == ev
    ok(call(old_sdk, "DeleteEventRecordPlanDevice", **dev(d)))
    assert plan_of(old_sdk, EVENT, d) is None


@pytest.mark.parametrize("kind", KINDS)
def test_deleting_a_plan_releases_its_devices(old_sdk, kind):
    p = kind.prefix
    devices = make_devices(old_sdk, 3)
    a, b = create_plan(old_sdk, kind, "A"), create_plan(old_sdk, kind, "B")
    for d in devices:
        for s in (0, 1):
            ok(call(old_sdk, f"Add{p}Device", PlanId=a, **dev(d), StreamType=s))
    assert len(devices_of(old_sdk, kind, a)) == 6
    ok(call(old_sdk, f"Delete{p}", PlanId=a))
    business_error(call(old_sdk, f"Query{p}DeviceByPlan", PlanId=a), "460", f"{kind.label} not exist.")
    assert all(plan_of(old_sdk, kind, d, s) is None for d in devices for s in (0, 1))
    for d in devices:
        ok(call(old_sdk, f"Add{p}Device", PlanId=b, **dev(d, "pk"), StreamType=1))
    assert sorted(devices_of(old_sdk, kind, b)) == sorted((d["IotId"], 1) for d in devices)


@pytest.mark.parametrize("kind", KINDS)
def test_devices_by_plan_paging(server, key, old_sdk, kind):
    p = kind.prefix
    devices = make_devices(old_sdk, 25)
    pid = create_plan(old_sdk, kind)
    for d in devices:
        ok(call(old_sdk, f"Add{p}Device", PlanId=pid, **dev(d)))

    seen: list[tuple[str, int]] = []
    for page in (1, 2, 3):
        data = ok(call(old_sdk, f"Query{p}DeviceByPlan", PlanId=pid, CurrentPage=page, PageSize=10))
        assert (data["Page"], data["PageSize"], data["PageCount"], data["Total"]) == (page, 10, 3, 25)
        assert len(data["List"]) == (10 if page < 3 else 5)
        seen += [(x["IotId"], x["StreamType"]) for x in data["List"]]
    assert len(set(seen)) == 25 and {i for i, _ in seen} == {d["IotId"] for d in devices}
    assert seen == devices_of(old_sdk, kind, pid)  # a stable order
    empty = ok(call(old_sdk, f"Query{p}DeviceByPlan", PlanId=pid, CurrentPage=4, PageSize=10))
    assert empty["List"] == [] and empty["Total"] == 25 and empty["PageCount"] == 3
    default = ok(call(old_sdk, f"Query{p}DeviceByPlan", PlanId=pid))
    assert (default["PageSize"], len(default["List"]), default["PageCount"]) == (10, 10, 3)

    client = Client(new_config(server, key, None))
    last = ok(new_call(client, f"Query{p}DeviceByPlan", plan_id=pid, current_page=3, page_size=10))
    assert (last.page, last.page_size, last.page_count, last.total) == (3, 10, 3, 25)
    assert [(m.iot_id, m.stream_type) for m in last.list] == seen[20:]


@pytest.mark.parametrize("kind", KINDS)
def test_plans_paging(old_sdk, kind):
    ids = [create_plan(old_sdk, kind, f"p{i}") for i in range(7)]
    seen = []
    for page in (1, 2, 3):
        data = ok(call(old_sdk, f"Query{kind.prefix}s", CurrentPage=page, PageSize=3))
        assert (data["Page"], data["PageSize"], data["PageCount"], data["Total"]) == (page, 3, 3, 7)
        assert len(data["List"]) == (3 if page < 3 else 1)
        seen += [x["PlanId"] for x in data["List"]]
    assert sorted(seen) == sorted(ids)
    everything = ok(call(old_sdk, f"Query{kind.prefix}s", PageSize=50))["List"]
    assert seen == [x["PlanId"] for x in everything]  # one stable order across pages


# --- tenancy ----------------------------------------------------------------------------

def test_other_tenant_can_neither_see_nor_change_plans_or_devices(server, old_sdk):
    mine = make_devices(old_sdk, 2)
    plans = {}
    for kind in (RECORD, EVENT):
        plans[kind.prefix] = create_plan(old_sdk, kind, "mine")
        ok(call(old_sdk, f"Add{kind.prefix}Device", PlanId=plans[kind.prefix], **dev(mine[0])))
    before = {k.prefix: state(old_sdk, k, mine) for k in (RECORD, EVENT)}

    other_key = server.new_key()
    other, other_new = OldSdk(server, other_key), Client(new_config(server, other_key, None))
    theirs = make_devices(other, 1)[0]
    for kind in (RECORD, EVENT):
        p, pid = kind.prefix, plans[kind.prefix]
        their_pid = create_plan(other, kind, "theirs")
        not_exist = f"{kind.label} not exist."
        # my plan IDs are unknown to them
        business_error(call(other, f"Query{p}Detail", PlanId=pid), "460", not_exist)
        business_error(call(other, f"Update{p}", PlanId=pid, Name="hacked"), "460", not_exist)
        business_error(call(other, f"Delete{p}", PlanId=pid), "460", not_exist)
        business_error(call(other, f"Query{p}DeviceByPlan", PlanId=pid), "460", not_exist)
        business_error(call(other, f"Add{p}Device", PlanId=pid, **dev(theirs)), "460", not_exist)
        assert ok(call(other, f"Query{p}s"))["List"][0]["PlanId"] == their_pid
        # my devices are forbidden to them, by either address, even into their own plan
        for by in ("iot", "pk"):
            for d in mine:
                business_error(call(other, f"Add{p}Device", PlanId=their_pid, **dev(d, by)), "403",
                               "tenant auth error")
                business_error(call(other, f"Delete{p}Device", **dev(d, by)), "403", "tenant auth error")
                business_error(call(other, f"Query{p}DeviceByDevice", **dev(d, by)), "403", "tenant auth error")
        assert devices_of(other, kind, their_pid) == []
        # the same through the new SDK
        business_error(new_call(other_new, f"Query{p}Detail", plan_id=pid), "460", not_exist)
        business_error(new_call(other_new, f"Query{p}DeviceByDevice", iot_id=mine[0]["IotId"], stream_type=0),
                       "403", "tenant auth error")

    # and I cannot touch theirs
    for kind in (RECORD, EVENT):
        business_error(call(old_sdk, f"Add{kind.prefix}Device", PlanId=plans[kind.prefix], **dev(theirs)),
                       "403", "tenant auth error")
    assert {k.prefix: state(old_sdk, k, mine) for k in (RECORD, EVENT)} == before


# --- concurrency ------------------------------------------------------------------------

def test_concurrent_adds_and_delete_keep_one_plan_per_stream(server, key, old_sdk):
    """Each stream is added to plans A and B at once while A is deleted: every call ends
    in success or a business refusal (never a 500), and no stream is left bound to the
    deleted plan."""
    devices = make_devices(old_sdk, 8)
    a, b = create_plan(old_sdk, RECORD, "A"), create_plan(old_sdk, RECORD, "B")
    clients = [OldSdk(server, key) for _ in range(2 * len(devices) + 1)]

    def add(i: int) -> Any:
        return call(clients[i], "AddRecordPlanDevice", PlanId=(a, b)[i % 2], **dev(devices[i // 2]))

    def delete_a() -> Any:
        return call(clients[-1], "DeleteRecordPlan", PlanId=a)

    with ThreadPoolExecutor(len(clients)) as pool:
        futures = [pool.submit(add, i) for i in range(2 * len(devices))] + [pool.submit(delete_a)]
        bodies = [f.result() for f in futures]  # a gateway error (500) would raise here
    for body in bodies:
        assert body["Success"] or body["Code"] == "460", body
    assert bodies[-1]["Success"]
    members = devices_of(old_sdk, RECORD, b)
    for i, d in enumerate(devices):
        bound = plan_of(old_sdk, RECORD, d)
        assert bound in (b, None)
        assert ((d["IotId"], 0) in members) == (bound == b)
        if bodies[2 * i + 1]["Success"]:
            assert bound == b
