"""The five time-template actions through both SDK generations, with every rule:
section validation and merging, AllDay, names, the default template, templates in use,
unknown IDs, paging and tenancy. Every refusal is checked to have changed nothing."""

from __future__ import annotations

import json

import pytest
from alibabacloud_linkvisual20180120 import models as lv
from alibabacloud_linkvisual20180120.client import Client
from api_support import business_error, default_template_id, gateway_error, ok, old_req
from conftest import OldSdk, new_config

SECTIONS = "TimeSectionList"


@pytest.fixture()
def new_v3(server, key):  # type: ignore[no-untyped-def]
    """The new SDK with its default signature only (the V3/v2 matrix runs elsewhere)."""
    return Client(new_config(server, key, None))


def create(old_sdk, name="tpl", all_day=0, sections=None, **extra):  # type: ignore[no-untyped-def]
    params = {"Name": name, "AllDay": all_day, **extra}
    if sections is not None:
        params["TimeSectionss"] = sections
    return old_sdk.call(old_req("CreateTimeTemplate", **params))


def detail(old_sdk, template_id):  # type: ignore[no-untyped-def]
    return old_sdk.call(old_req("QueryTimeTemplateDetail", TemplateId=template_id))


def listing(old_sdk, page=1, size=50):  # type: ignore[no-untyped-def]
    return ok(old_sdk.call(old_req("QueryTimeTemplate", CurrentPage=page, PageSize=size)))


def sec(day: int, begin: int, end: int) -> dict[str, int]:
    return {"DayOfWeek": day, "Begin": begin, "End": end}


def snapshot(old_sdk):  # type: ignore[no-untyped-def]
    """Everything the tenant has, to compare before and after a refused call."""
    return listing(old_sdk)["List"]


# --- create / detail / query ------------------------------------------------------------

def test_default_template_exists_and_cannot_be_changed_or_deleted(old_sdk):
    data = listing(old_sdk)
    assert data["Total"] == 1 and data["Page"] == 1 and data["PageCount"] == 1
    [tpl] = data["List"]
    assert tpl["Default"] == 1 and tpl["AllDay"] == 1 and tpl[SECTIONS] == []
    before = snapshot(old_sdk)

    business_error(old_sdk.call(old_req("DeleteTimeTemplate", TemplateId=tpl["TemplateId"])), "460")
    business_error(old_sdk.call(old_req("UpdateTimeTemplate", TemplateId=tpl["TemplateId"], Name="renamed")), "460")
    business_error(old_sdk.call(old_req("UpdateTimeTemplate", TemplateId=tpl["TemplateId"], AllDay=0,
                                        TimeSectionss=[sec(1, 0, 100)])), "460")
    assert snapshot(old_sdk) == before
    assert ok(detail(old_sdk, tpl["TemplateId"])) == tpl


def test_old_sdk_sections_are_merged_and_sorted(old_sdk):
    sections = [
        sec(3, 5000, 6000),
        sec(1, 100, 200),
        sec(1, 150, 300),      # overlaps the one before
        sec(1, 300, 400),      # touches: merged too
        sec(1, 1000, 2000),    # separate
        sec(0, 0, 86399),
        sec(6, 86000, 86399),
        sec(3, 5500, 5600),    # contained
    ]
    tid = ok(create(old_sdk, "merge", 0, sections))
    assert isinstance(tid, str) and tid
    tpl = ok(detail(old_sdk, tid))
    assert tpl == {
        "AllDay": 0, "Default": 0, "Name": "merge", "TemplateId": tid,
        SECTIONS: [sec(0, 0, 86399), sec(1, 100, 400), sec(1, 1000, 2000), sec(3, 5000, 6000),
                          sec(6, 86000, 86399)],
    }
    assert [t for t in listing(old_sdk)["List"] if t["TemplateId"] == tid] == [tpl]


def test_old_sdk_all_day_ignores_sections(old_sdk):
    tid = ok(create(old_sdk, "whole week", 1, [sec(2, 0, 10)]))
    assert ok(detail(old_sdk, tid)) == {"AllDay": 1, "Default": 0, "Name": "whole week", "TemplateId": tid,
                                         SECTIONS: []}
    tid2 = ok(create(old_sdk, "no sections", 1))
    assert ok(detail(old_sdk, tid2))["AllDay"] == 1


def test_seed_json_array_in_one_parameter(old_sdk):
    """The seed's examples send TimeSections as one JSON array (CommonRequest)."""
    sections = [sec(1, 0, 86399), sec(5, 0, 40000), sec(5, 30000, 50000)]
    tid = ok(old_sdk.common("CreateTimeTemplate", "Linkvisual", Name="testtime1", AllDay=0,
                            TimeSections=json.dumps(sections)))
    assert ok(detail(old_sdk, tid))[SECTIONS] == [sec(1, 0, 86399), sec(5, 0, 50000)]
    ok(old_sdk.common("UpdateTimeTemplate", "Linkvisual", TemplateId=tid,
                      TimeSections=json.dumps([sec(2, 10, 20)])))
    assert ok(detail(old_sdk, tid))[SECTIONS] == [sec(2, 10, 20)]
    # a JSON array that is not a list of objects is malformed
    before = snapshot(old_sdk)
    assert gateway_error(lambda: old_sdk.common("CreateTimeTemplate", "Linkvisual", Name="x", AllDay=0,
                                                TimeSections='{"DayOfWeek": 1}')) == "InvalidParameter"
    assert gateway_error(lambda: old_sdk.common("CreateTimeTemplate", "Linkvisual", Name="x", AllDay=0,
                                                TimeSections="[1, 2]")) == "InvalidParameter"
    assert snapshot(old_sdk) == before


def test_new_sdk_full_cycle(new_lv):
    """Create (model list), detail, query, update, delete: every response parses into
    the SDK's models with the right values."""
    S = lv.CreateTimeTemplateRequestTimeSections
    created = new_lv.create_time_template(lv.CreateTimeTemplateRequest(
        name="夜间录像 🌙", all_day=0,
        time_sections=[S(day_of_week=6, begin=0, end=3600), S(day_of_week=0, begin=7200, end=9000),
                       S(day_of_week=0, begin=8000, end=10000)])).body
    tid = ok(created)
    assert isinstance(tid, str)

    d = ok(new_lv.query_time_template_detail(lv.QueryTimeTemplateDetailRequest(template_id=tid)).body)
    assert isinstance(d, lv.QueryTimeTemplateDetailResponseBodyData)
    assert (d.template_id, d.name, d.all_day, d.default) == (tid, "夜间录像 🌙", 0, 0)
    assert [(s.day_of_week, s.begin, s.end) for s in d.time_section_list] == [(0, 7200, 10000), (6, 0, 3600)]
    assert all(isinstance(s, lv.QueryTimeTemplateDetailResponseBodyDataTimeSectionList) for s in d.time_section_list)

    page = ok(new_lv.query_time_template(lv.QueryTimeTemplateRequest(current_page=1, page_size=10)).body)
    assert isinstance(page, lv.QueryTimeTemplateResponseBodyData)
    assert (page.page, page.page_size, page.page_count, page.total) == (1, 10, 1, 2)
    mine = [t for t in page.list if t.template_id == tid]
    assert len(mine) == 1 and mine[0].name == "夜间录像 🌙" and len(mine[0].time_section_list) == 2
    assert sum(t.default for t in page.list) == 1

    U = lv.UpdateTimeTemplateRequestTimeSections
    upd = new_lv.update_time_template(lv.UpdateTimeTemplateRequest(
        template_id=tid, name="day", all_day=0, time_sections=[U(day_of_week=3, begin=100, end=200)])).body
    assert ok(upd) is None
    d = ok(new_lv.query_time_template_detail(lv.QueryTimeTemplateDetailRequest(template_id=tid)).body)
    assert d.name == "day" and [(s.day_of_week, s.begin, s.end) for s in d.time_section_list] == [(3, 100, 200)]

    upd = new_lv.update_time_template(lv.UpdateTimeTemplateRequest(template_id=tid, all_day=1)).body
    ok(upd)
    d = ok(new_lv.query_time_template_detail(lv.QueryTimeTemplateDetailRequest(template_id=tid)).body)
    assert d.all_day == 1 and d.time_section_list == [] and d.name == "day"

    ok(new_lv.delete_time_template(lv.DeleteTimeTemplateRequest(template_id=tid)).body)
    gone = new_lv.query_time_template_detail(lv.QueryTimeTemplateDetailRequest(template_id=tid)).body
    business_error(gone, "460", "template not exist.")
    assert new_lv.query_time_template(lv.QueryTimeTemplateRequest()).body.data.total == 1


def test_new_sdk_refusals(new_lv):
    S = lv.CreateTimeTemplateRequestTimeSections
    before = new_lv.query_time_template(lv.QueryTimeTemplateRequest()).body.data.to_map()
    # business rules: in the body model
    business_error(new_lv.create_time_template(lv.CreateTimeTemplateRequest(name="x", all_day=0)).body, "460")
    business_error(new_lv.create_time_template(lv.CreateTimeTemplateRequest(
        name="x", all_day=0, time_sections=[S(day_of_week=1, begin=500, end=500)])).body, "460")
    business_error(new_lv.create_time_template(lv.CreateTimeTemplateRequest(name="x" * 65, all_day=1)).body, "460")
    business_error(new_lv.delete_time_template(lv.DeleteTimeTemplateRequest(template_id="nope")).body,
                   "460", "template not exist.")
    # malformed parameters: gateway errors raised by the SDK
    assert gateway_error(lambda: new_lv.create_time_template(lv.CreateTimeTemplateRequest(
        name="x", all_day=0, time_sections=[S(day_of_week=7, begin=0, end=10)]))) == "InvalidParameter"
    assert gateway_error(lambda: new_lv.create_time_template(lv.CreateTimeTemplateRequest(
        all_day=1))) == "MissingParameter"
    assert gateway_error(lambda: new_lv.query_time_template_detail(
        lv.QueryTimeTemplateDetailRequest())) == "MissingParameter"
    assert gateway_error(lambda: new_lv.query_time_template(
        lv.QueryTimeTemplateRequest(page_size=51))) == "InvalidParameter"
    assert new_lv.query_time_template(lv.QueryTimeTemplateRequest()).body.data.to_map() == before


# --- validation rules -------------------------------------------------------------------

GATEWAY_REFUSED = {
    "day-7": [sec(7, 0, 10)],
    "day-neg": [sec(-1, 0, 10)],
    "begin-neg": [sec(1, -1, 10)],
    "end-86400": [sec(1, 0, 86400)],
    "begin-86400": [sec(1, 86400, 86401)],
    "end-missing": [{"DayOfWeek": 1, "Begin": 0}],
    "day-not-int": [{"DayOfWeek": "Mon", "Begin": 0, "End": 10}],
    "begin-not-int": [{"DayOfWeek": 1, "Begin": "1.5", "End": 10}],
}
BUSINESS_REFUSED = {
    "begin-eq-end": [sec(1, 100, 100)],
    "begin-gt-end": [sec(1, 200, 100)],
    "second-bad": [sec(1, 0, 10), sec(2, 50, 40)],
}


def test_section_rules(old_sdk):
    """DayOfWeek 0..6, Begin/End 0..86399 are parameter checks (HTTP 400); Begin < End and
    AllDay=0 needing sections are business rules (460). Nothing is created either way."""
    before = snapshot(old_sdk)
    for case, sections in GATEWAY_REFUSED.items():
        assert gateway_error(lambda: create(old_sdk, "bad", 0, sections)) == "InvalidParameter", case
    for sections in BUSINESS_REFUSED.values():
        msg = business_error(create(old_sdk, "bad", 0, sections), "460")
        assert msg.startswith(f"invalid TimeSections: TimeSections.{len(sections)}.End "), msg  # as sent
    business_error(create(old_sdk, "bad", 0), "460")
    business_error(create(old_sdk, "bad", 0, []), "460")
    assert gateway_error(lambda: create(old_sdk, "bad", 2)) == "InvalidParameter"
    assert gateway_error(lambda: create(old_sdk, "bad", "yes")) == "InvalidParameter"
    assert gateway_error(lambda: old_sdk.call(old_req("CreateTimeTemplate", Name="bad"))) == "MissingParameter"
    assert gateway_error(lambda: old_sdk.call(old_req("CreateTimeTemplate", AllDay=1))) == "MissingParameter"
    assert snapshot(old_sdk) == before

    # the boundaries themselves are fine
    tid = ok(create(old_sdk, "edges", 0, [sec(0, 0, 1), sec(6, 86398, 86399), sec(3, 0, 86399)]))
    assert ok(detail(old_sdk, tid))[SECTIONS] == [sec(0, 0, 1), sec(3, 0, 86399), sec(6, 86398, 86399)]


def test_update_rules_change_nothing_when_refused(old_sdk):
    tid = ok(create(old_sdk, "keep", 0, [sec(2, 10, 20)]))
    original = ok(detail(old_sdk, tid))
    business_error(old_sdk.call(old_req("UpdateTimeTemplate", TemplateId=tid, AllDay=0,
                                        TimeSectionss=[sec(2, 30, 30)])), "460")
    business_error(old_sdk.call(old_req("UpdateTimeTemplate", TemplateId=tid, Name="n" * 65)), "460")
    assert gateway_error(lambda: old_sdk.call(old_req("UpdateTimeTemplate", TemplateId=tid,
                                                      TimeSectionss=[sec(9, 0, 10)]))) == "InvalidParameter"
    assert gateway_error(lambda: old_sdk.call(old_req("UpdateTimeTemplate", Name="x"))) == "MissingParameter"
    business_error(old_sdk.call(old_req("UpdateTimeTemplate", TemplateId="unknown-id", Name="x")),
                   "460", "template not exist.")
    # switching an all-day template to AllDay=0 needs sections
    all_day = ok(create(old_sdk, "allday", 1))
    business_error(old_sdk.call(old_req("UpdateTimeTemplate", TemplateId=all_day, AllDay=0)), "460")
    assert ok(detail(old_sdk, all_day))["AllDay"] == 1
    assert ok(detail(old_sdk, tid)) == original

    # partial updates keep the fields not given
    ok(old_sdk.call(old_req("UpdateTimeTemplate", TemplateId=tid, Name="renamed")))
    assert ok(detail(old_sdk, tid)) == {**original, "Name": "renamed"}
    ok(old_sdk.call(old_req("UpdateTimeTemplate", TemplateId=tid, TimeSectionss=[sec(4, 1, 2), sec(4, 2, 3)])))
    assert ok(detail(old_sdk, tid)) == {**original, "Name": "renamed", SECTIONS: [sec(4, 1, 3)]}


def test_names(old_sdk, new_v3):
    """1..64 characters of any Unicode (counted in characters, not bytes)."""
    before = snapshot(old_sdk)
    business_error(create(old_sdk, "a" * 65, 1), "460")
    business_error(create(old_sdk, "录" * 65, 1), "460")
    business_error(create(old_sdk, "🎥" * 65, 1), "460")
    assert snapshot(old_sdk) == before

    names = ["a" * 64, "全天录像模板", "🎥" * 64, "Café ☕ ünïcödé", "x", "with space & sym=bols?/+%"]
    ids = {n: ok(create(old_sdk, n, 1)) for n in names}
    for name, tid in ids.items():
        assert ok(detail(old_sdk, tid))["Name"] == name
        got = new_v3.query_time_template_detail(lv.QueryTimeTemplateDetailRequest(template_id=tid)).body
        assert ok(got).name == name
    listed = {t["TemplateId"]: t["Name"] for t in listing(old_sdk)["List"]}
    assert all(listed[tid] == name for name, tid in ids.items())


def test_template_in_use_cannot_be_deleted(old_sdk):
    tid = ok(create(old_sdk, "used", 1))
    rec = ok(old_sdk.call(old_req("CreateRecordPlan", Name="r", TemplateId=tid)))
    ev = ok(old_sdk.call(old_req("CreateEventRecordPlan", Name="e", TemplateId=tid, RecordDuration=10)))
    before = snapshot(old_sdk)
    business_error(old_sdk.call(old_req("DeleteTimeTemplate", TemplateId=tid)), "460")
    ok(old_sdk.call(old_req("DeleteRecordPlan", PlanId=rec)))
    business_error(old_sdk.call(old_req("DeleteTimeTemplate", TemplateId=tid)), "460")  # still the event plan
    assert snapshot(old_sdk) == before
    ok(old_sdk.call(old_req("DeleteEventRecordPlan", PlanId=ev)))
    ok(old_sdk.call(old_req("DeleteTimeTemplate", TemplateId=tid)))
    business_error(detail(old_sdk, tid), "460", "template not exist.")
    business_error(old_sdk.call(old_req("DeleteTimeTemplate", TemplateId=tid)), "460", "template not exist.")
    assert listing(old_sdk)["Total"] == 1


def test_unknown_template_id(old_sdk):
    before = snapshot(old_sdk)
    for tid in ["doesnotexist", "0" * 32, "🎥"]:
        business_error(detail(old_sdk, tid), "460", "template not exist.")
        business_error(old_sdk.call(old_req("DeleteTimeTemplate", TemplateId=tid)), "460", "template not exist.")
        business_error(old_sdk.call(old_req("UpdateTimeTemplate", TemplateId=tid, AllDay=1)), "460",
                       "template not exist.")
    assert gateway_error(lambda: detail(old_sdk, "x" * 65)) == "InvalidParameter"
    assert gateway_error(lambda: old_sdk.call(old_req("DeleteTimeTemplate"))) == "MissingParameter"
    assert snapshot(old_sdk) == before


# --- paging -----------------------------------------------------------------------------

def test_paging_is_consistent(old_sdk, new_v3):
    made = [ok(create(old_sdk, f"t{i:02d}", 1)) for i in range(12)]
    everything = listing(old_sdk)
    assert everything["Total"] == 13 and len(everything["List"]) == 13 and everything["PageCount"] == 1

    seen: list[str] = []
    for page in (1, 2, 3):
        data = listing(old_sdk, page, 5)
        assert (data["Page"], data["PageSize"], data["PageCount"], data["Total"]) == (page, 5, 3, 13)
        assert len(data["List"]) == (5 if page < 3 else 3)
        seen += [t["TemplateId"] for t in data["List"]]
    assert len(seen) == len(set(seen)) == 13 and set(made) <= set(seen)
    assert seen == [t["TemplateId"] for t in everything["List"]]  # a stable order

    exact = listing(old_sdk, 1, 13)  # an exact multiple: no empty last page
    assert (exact["PageCount"], len(exact["List"])) == (1, 13)
    assert listing(old_sdk, 2, 13)["List"] == []

    beyond = listing(old_sdk, 4, 5)
    assert beyond["List"] == [] and beyond["Total"] == 13 and beyond["Page"] == 4

    default = ok(old_sdk.call(old_req("QueryTimeTemplate")))
    assert (default["Page"], default["PageSize"], default["PageCount"], len(default["List"])) == (1, 10, 2, 10)

    # the new SDK parses the same pages
    body = new_v3.query_time_template(lv.QueryTimeTemplateRequest(current_page=3, page_size=5)).body
    assert (body.data.page, body.data.page_size, body.data.page_count, body.data.total) == (3, 5, 3, 13)
    assert [t.template_id for t in body.data.list] == seen[10:]

    for bad in ({"PageSize": 51}, {"PageSize": 0}, {"CurrentPage": 0}, {"CurrentPage": -1},
                {"PageSize": "ten"}):
        assert gateway_error(lambda: old_sdk.call(old_req("QueryTimeTemplate", **bad))) == "InvalidParameter", bad
    assert listing(old_sdk, 1, 50)["Total"] == 13


# --- tenancy ----------------------------------------------------------------------------

def test_other_tenant_can_neither_see_nor_change_templates(server, old_sdk):
    mine = ok(create(old_sdk, "mine", 0, [sec(1, 0, 100)]))
    my_default = default_template_id(old_sdk)
    before = snapshot(old_sdk)

    other_key = server.new_key()
    other = OldSdk(server, other_key)
    other_new = Client(new_config(server, other_key, None))
    theirs = listing(other)
    assert theirs["Total"] == 1 and theirs["List"][0]["TemplateId"] != my_default

    for tid in (mine, my_default):
        business_error(detail(other, tid), "460", "template not exist.")
        business_error(other.call(old_req("UpdateTimeTemplate", TemplateId=tid, Name="hacked")), "460",
                       "template not exist.")
        business_error(other.call(old_req("DeleteTimeTemplate", TemplateId=tid)), "460", "template not exist.")
        business_error(other.call(old_req("CreateRecordPlan", Name="p", TemplateId=tid)), "460",
                       "template not exist.")
        business_error(other.call(old_req("CreateEventRecordPlan", Name="p", TemplateId=tid, RecordDuration=5)),
                       "460", "template not exist.")
        body = other_new.query_time_template_detail(lv.QueryTimeTemplateDetailRequest(template_id=tid)).body
        business_error(body, "460", "template not exist.")

    assert snapshot(old_sdk) == before
    assert listing(other)["Total"] == 1
    assert ok(other.call(old_req("QueryRecordPlans")))["Total"] == 0
