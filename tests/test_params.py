"""Params decodes what both SDKs and the seed's examples send, and fails only with GatewayError."""

from __future__ import annotations

import json
from typing import Any

import pytest
from alibabacloud_linkvisual20180120 import models
from alibabacloud_openapi_util.client import Client as OpenApiUtil
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from iotvideo.errors import GatewayError
from iotvideo.openapi.params import MAX_JSON_CHARS, Params

fast = settings(max_examples=200, deadline=None)
ITEMS = st.lists(st.text(max_size=12), max_size=12)
FIELDS = ("DayOfWeek", "Begin", "End")
OBJECTS = st.lists(
    st.fixed_dictionaries({}, optional={f: st.text(max_size=8) for f in FIELDS}), max_size=8
)
INDICES = st.lists(st.integers(1, 10**6), unique=True, max_size=12)


def code_of(call: Any) -> str:
    with pytest.raises(GatewayError) as caught:
        call()
    assert caught.value.status == 400
    return caught.value.code


def indexed(name: str, values: list[Any], indices: list[int]) -> dict[str, Any]:
    """``values`` at increasing positive indices drawn from ``indices`` (gaps allowed)."""
    return dict(zip((f"{name}.{n}" for n in sorted(indices)), values))


# --- scalars -------------------------------------------------------------------------

def test_str() -> None:
    p = Params({"Name": "abc", "Empty": ""})
    assert p.str("Name") == "abc"
    assert p.str("Missing") is None and p.str("Empty", default="d") == "d"
    assert code_of(lambda: p.str("Empty", required=True)) == "MissingParameter"
    assert code_of(lambda: p.str("Name", max_len=2)) == "InvalidParameter"
    assert code_of(lambda: p.str("Name", min_len=4)) == "InvalidParameter"
    assert p.str("Name", min_len=3, max_len=3) == "abc"


def test_int() -> None:
    p = Params({"A": "42", "B": "-7", "C": "007"})
    assert (p.int("A"), p.int("B"), p.int("C")) == (42, -7, 7)
    assert p.int("Missing", default=10) == 10
    assert p.int("A", min=42, max=42) == 42
    assert code_of(lambda: p.int("A", max=41)) == "InvalidParameter"
    assert code_of(lambda: p.int("B", min=0)) == "InvalidParameter"
    assert code_of(lambda: p.int("Missing", required=True)) == "MissingParameter"


@pytest.mark.parametrize("bad", ["1.0", " 1", "1 ", "+1", "1_000", "0x10", "1e3", "١", "²", "-", "--1", "9" * 20, "NaN"])
def test_int_rejects_non_decimal(bad: str) -> None:
    assert code_of(lambda: Params({"A": bad}).int("A")) == "InvalidParameter"


@fast
@given(st.integers(-(10**18), 10**18), st.integers(-100, 100), st.integers(-100, 100))
def test_int_bounds(value: int, low: int, high: int) -> None:
    p = Params({"A": str(value)})
    if low <= value <= high:
        assert p.int("A", min=low, max=high) == value
    else:
        assert code_of(lambda: p.int("A", min=low, max=high)) == "InvalidParameter"


@fast
@given(st.sampled_from(["true", "false"]), st.lists(st.booleans(), min_size=5, max_size=5))
def test_bool_any_case(word: str, upper: list[bool]) -> None:
    spelled = "".join(c.upper() if u else c for c, u in zip(word, upper))
    assert Params({"B": spelled}).bool("B") is (word == "true")


def test_bool() -> None:
    p = Params({"T": "1", "F": "0", "Bad": "yes"})
    assert (p.bool("T"), p.bool("F"), p.bool("Missing", default=True)) == (True, False, True)
    assert code_of(lambda: p.bool("Bad")) == "InvalidParameter"
    assert code_of(lambda: p.bool("Missing", required=True)) == "MissingParameter"


def test_has() -> None:
    p = Params({"A": "x", "E": "", "L.1": "a", "O.1.Begin": "0"})
    assert p.has("A") and p.has("L") and p.has("O")
    assert not p.has("E") and not p.has("Missing") and not p.has("O.1.B")


# --- lists ---------------------------------------------------------------------------

def test_list_forms() -> None:
    assert Params({"L.10": "c", "L.2": "b", "L.1": "a"}).list("L") == ["a", "b", "c"]
    assert Params({"L": '["a", "b", 3, true]'}).list("L") == ["a", "b", "3", "true"]
    assert Params({"DeviceList.1": '["iotId1", "iotId2"]'}).list("DeviceList") == ["iotId1", "iotId2"]
    assert Params({"L.1": "[not json", "L.2": "x"}).list("L") == ["[not json", "x"]
    assert Params({"L.1": "[not json"}).list("L") == ["[not json"]
    assert Params({"L.1": "a", "L.1.Field": "x", "LX.1": "y"}).list("L") == ["a"]
    assert Params({}).list("L") == [] and Params({"L": ""}).list("L") == []


@pytest.mark.parametrize("raw", [
    {"L.0": "a"}, {"L.01": "a"}, {"L.-1": "a"}, {"L.x": "a"}, {"L.": "a"}, {"L.1234567890": "a"},
    {"L": "a"}, {"L": "{}"}, {"L": "[[1]]"}, {"L": "[null]"}, {"L": '[{"a": 1}]'},
    {"L": '["a"]', "L.1": "b"}, {"L": "[" * 50000}, {"L": '["' + "a" * MAX_JSON_CHARS + '"]'},
])
def test_list_rejects_malformed(raw: dict[str, str]) -> None:
    assert code_of(lambda: Params(raw).list("L")) == "InvalidParameter"


def test_list_limits() -> None:
    assert code_of(lambda: Params({"L.1": "a"}).list("L", required=True, max_items=0)) == "InvalidParameter"
    assert code_of(lambda: Params({}).list("L", required=True)) == "MissingParameter"
    many = {f"L.{n}": "x" for n in range(1, 1002)}
    assert code_of(lambda: Params(many).list("L")) == "InvalidParameter"
    assert len(Params(many).list("L", max_items=2000)) == 1001
    assert code_of(lambda: Params({"L": json.dumps(["a"] * 3)}).list("L", max_items=2)) == "InvalidParameter"


@fast
@given(ITEMS, INDICES)
def test_list_round_trip_indexed(items: list[str], indices: list[int]) -> None:
    assume(len(indices) >= len(items))
    if len(items) == 1:  # a lone "[...]" in Name.1 is read as the seed's JSON form
        assume(not isinstance(_json_or_none(items[0]), list))
    assert Params(indexed("L", items, indices)).list("L") == items


@fast
@given(ITEMS)
def test_list_round_trip_json_and_sdk_query(items: list[str]) -> None:
    assert Params({"L": json.dumps(items)}).list("L") == items
    assert Params({"L.1": json.dumps(items, ensure_ascii=False)}).list("L") == items
    assume(len(items) != 1 or not isinstance(_json_or_none(items[0]), list))
    assert Params(OpenApiUtil.query({"L": items})).list("L") == items


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


# --- objects -------------------------------------------------------------------------

SEED_EXAMPLE = (
    '[{ "DayOfWeek" :0, "Begin" :20000, "End" :60000},{ "DayOfWeek" :4, "Begin" :0, "End" :86399, "X": [1]}]'
)


def test_objects_forms() -> None:
    expected = [{"DayOfWeek": "0", "Begin": "20000", "End": "60000"}, {"DayOfWeek": "4", "Begin": "0", "End": "86399"}]
    assert Params({"T": SEED_EXAMPLE}).objects("T", FIELDS) == expected
    assert Params({"T.1": SEED_EXAMPLE}).objects("T", FIELDS) == expected
    flat = {"T.2.Begin": "0", "T.2.End": "86399", "T.2.DayOfWeek": "4", "T.1.DayOfWeek": "0",
            "T.1.Begin": "20000", "T.1.End": "60000", "T.1.Junk": "x"}
    assert Params(flat).objects("T", FIELDS) == expected
    assert Params({"T.3.Begin": "1", "T.7.End": "2"}).objects("T", FIELDS) == [{"Begin": "1"}, {"End": "2"}]
    assert Params({"T": '[{"Begin": null, "End": 5}]'}).objects("T", FIELDS) == [{"End": "5"}]
    assert Params({}).objects("T", FIELDS) == []
    assert code_of(lambda: Params({}).objects("T", FIELDS, required=True)) == "MissingParameter"


@pytest.mark.parametrize("raw", [
    {"T": "[1]"}, {"T": "{}"}, {"T": '[{"Begin": [1]}]'}, {"T": '[{"Begin": {}}]'}, {"T": "nope"},
    {"T.x.Begin": "1"}, {"T.0.Begin": "1"}, {"T": "[{}]", "T.1.Begin": "1"},
])
def test_objects_reject_malformed(raw: dict[str, str]) -> None:
    assert code_of(lambda: Params(raw).objects("T", FIELDS)) == "InvalidParameter"


@fast
@given(OBJECTS, INDICES)
def test_objects_round_trip(objects: list[dict[str, str]], indices: list[int]) -> None:
    assume(len(indices) >= len(objects))
    flat = {f"{key}.{field}": value for key, obj in indexed("T", objects, indices).items() for field, value in obj.items()}
    assert Params(flat).objects("T", FIELDS) == [obj for obj in objects if obj]  # {} leaves no trace
    assert Params({"T": json.dumps(objects)}).objects("T", FIELDS) == objects


@fast
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 86399), st.integers(0, 86399)), max_size=10))
def test_objects_from_both_sdks(sections: list[tuple[int, int, int]]) -> None:
    from aliyunsdklinkvisual.request.v20180120.CreateTimeTemplateRequest import CreateTimeTemplateRequest

    expected = [{"DayOfWeek": str(d), "Begin": str(b), "End": str(e)} for d, b, e in sections]
    new = models.CreateTimeTemplateRequest(
        name="n", all_day=0,
        time_sections=[models.CreateTimeTemplateRequestTimeSections(begin=b, day_of_week=d, end=e) for d, b, e in sections],
    )
    new_query = OpenApiUtil.query({"AllDay": new.all_day, "Name": new.name, "TimeSections": new.time_sections})
    assert Params(new_query).objects("TimeSections", FIELDS) == expected
    old = CreateTimeTemplateRequest()
    old.set_TimeSectionss([{"DayOfWeek": d, "Begin": b, "End": e} for d, b, e in sections])
    old_query = {k: str(v) for k, v in old.get_query_params().items()}
    assert Params(old_query).objects("TimeSections", FIELDS) == expected


def test_sdk_booleans_and_lists() -> None:
    request = models.QueryLiveStreamingRequest(iot_id="i", should_encrypt=True, force_iframe=False, cache_duration=5)
    p = Params(OpenApiUtil.query(request.to_map()))
    assert (p.bool("ShouldEncrypt"), p.bool("ForceIFrame"), p.int("CacheDuration")) == (True, False, 5)
    devices = models.QueryDeviceRecordLifeCycleRequest(device_list=["a", "b"])
    assert Params(OpenApiUtil.query(devices.to_map())).list("DeviceList") == ["a", "b"]


# --- hostile input -------------------------------------------------------------------

GARBAGE_KEYS = st.one_of(
    st.sampled_from(["X", "X.", "X.1", "X.2", "X.01", "X.0", "X.1.A", "X.2.B", "X.a.A", "X..A", "X.1.", "Y"]),
    st.builds(lambda n, f: f"X.{n}{f}", st.text("0123456789-+ ", max_size=12), st.sampled_from(["", ".A", ".B"])),
    st.text(max_size=8),
)
GARBAGE_VALUES = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["[", "[]", "[1]", '["a"]', '[{"A": 1}]', "[[[]]]", "{}", "true", "TRUE", "0", "-1", "1e9", "null"]),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                 lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from("AB"), c, max_size=2)).map(json.dumps),
)


@fast
@given(st.dictionaries(GARBAGE_KEYS, GARBAGE_VALUES, max_size=8), st.integers(0, 3))
def test_garbage_only_raises_gateway_error(raw: dict[str, str], max_items: int) -> None:
    p = Params(raw)
    calls = [
        lambda: p.str("X", required=True, max_len=5, min_len=1),
        lambda: p.int("X", required=True, min=-5, max=5),
        lambda: p.bool("X", required=True),
        lambda: p.list("X", required=True, max_items=max_items),
        lambda: p.list("X"),
        lambda: p.objects("X", ("A", "B"), required=True, max_items=max_items),
        lambda: p.objects("X", ("A",)),
        lambda: p.has("X"),
    ]
    for call in calls:
        try:
            result = call()
        except GatewayError as error:
            assert error.code in ("MissingParameter", "InvalidParameter")
            continue
        if isinstance(result, list):
            assert len(result) <= 1000 and all(isinstance(x, (str, dict)) for x in result)
