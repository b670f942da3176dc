"""The four storage-lifecycle actions through both SDK generations: Day 0..3650,
record and picture lifecycles kept apart, DeviceList in the SDKs' flat form and the
seed's JSON form, "deviceList lifecycle not exist.", device addressing and tenancy.
Every refusal is checked to have changed nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from alibabacloud_linkvisual20180120 import models as lv
from alibabacloud_linkvisual20180120.client import Client
from api_support import business_error, gateway_error, make_devices, ok, old_req
from conftest import OldSdk, new_config

NONE_SET = "deviceList lifecycle not exist."


def call(sdk: OldSdk, action: str, **params: Any) -> Any:
    return sdk.call(old_req(action, **params))


def records(sdk: OldSdk, iot_ids: list[str]) -> Any:
    """QueryDeviceRecordLifeCycle's Data, or the business error body."""
    body = call(sdk, "QueryDeviceRecordLifeCycle", DeviceLists=iot_ids)
    return body["Data"] if body["Success"] else (body["Code"], body["ErrorMessage"])


def picture(sdk: OldSdk, iot_id: str) -> Any:
    body = call(sdk, "QueryDevicePictureLifeCycle", IotId=iot_id)
    return body["Data"] if body["Success"] else (body["Code"], body["ErrorMessage"])


def everything(sdk: OldSdk, devices: list[dict[str, str]]) -> Any:
    ids = [d["IotId"] for d in devices]
    return [records(sdk, [i]) for i in ids], [picture(sdk, i) for i in ids]


def test_old_sdk_record_lifecycle(old_sdk):
    d1, d2, d3 = make_devices(old_sdk, 3)
    ids = [d1["IotId"], d2["IotId"], d3["IotId"]]
    business_error(call(old_sdk, "QueryDeviceRecordLifeCycle", DeviceLists=ids), "466", NONE_SET)

    ok(call(old_sdk, "SetDeviceRecordLifeCycle", IotId=d1["IotId"], Day=7))
    ok(call(old_sdk, "SetDeviceRecordLifeCycle", ProductKey=d2["ProductKey"], DeviceName=d2["DeviceName"], Day=30))
    # devices without one are left out; the order is the order asked
    assert records(old_sdk, ids) == [{"IotId": d1["IotId"], "Day": 7}, {"IotId": d2["IotId"], "Day": 30}]
    assert records(old_sdk, ids[::-1]) == [{"IotId": d2["IotId"], "Day": 30}, {"IotId": d1["IotId"], "Day": 7}]
    assert records(old_sdk, [d3["IotId"]]) == (466, NONE_SET)  # the SDK models Code as an int here
    assert records(old_sdk, [d1["IotId"], d1["IotId"]]) == [{"IotId": d1["IotId"], "Day": 7}]

    # the seed's form: one JSON array in DeviceList.1 (and the whole array in DeviceList)
    seed = old_sdk.common("QueryDeviceRecordLifeCycle", "Linkvisual", **{"DeviceList.1": json.dumps(ids[:2])})
    assert ok(seed) == [{"IotId": d1["IotId"], "Day": 7}, {"IotId": d2["IotId"], "Day": 30}]
    whole = old_sdk.common("QueryDeviceRecordLifeCycle", "Linkvisual", DeviceList=json.dumps(ids))
    assert ok(whole) == ok(seed)

    # bounds: 0 (keep none) and 3650 are fine; the last setting wins
    ok(call(old_sdk, "SetDeviceRecordLifeCycle", IotId=d1["IotId"], Day=0))
    ok(call(old_sdk, "SetDeviceRecordLifeCycle", IotId=d2["IotId"], Day=3650))
    assert records(old_sdk, ids) == [{"IotId": d1["IotId"], "Day": 0}, {"IotId": d2["IotId"], "Day": 3650}]
    # the picture lifecycle is a separate setting
    assert picture(old_sdk, d1["IotId"]) == ("466", NONE_SET)


def test_old_sdk_picture_lifecycle(old_sdk):
    d1, d2 = make_devices(old_sdk, 2)
    business_error(call(old_sdk, "QueryDevicePictureLifeCycle", IotId=d1["IotId"]), "466", NONE_SET)
    ok(call(old_sdk, "SetDevicePictureLifeCycle", IotId=d1["IotId"], Day=15))
    ok(call(old_sdk, "SetDevicePictureLifeCycle", ProductKey=d2["ProductKey"], DeviceName=d2["DeviceName"], Day=0))
    assert picture(old_sdk, d1["IotId"]) == {"IotId": d1["IotId"], "Day": 15}
    assert picture(old_sdk, d2["IotId"]) == {"IotId": d2["IotId"], "Day": 0}
    by_pk = old_sdk.common("QueryDevicePictureLifeCycle", "Linkvisual", ProductKey=d2["ProductKey"],
                           DeviceName=d2["DeviceName"])
    assert ok(by_pk) == {"IotId": d2["IotId"], "Day": 0}
    assert records(old_sdk, [d1["IotId"], d2["IotId"]]) == (466, NONE_SET)


def test_refusals_change_nothing(old_sdk):
    devices = make_devices(old_sdk, 2)
    d1, d2 = devices
    ok(call(old_sdk, "SetDeviceRecordLifeCycle", IotId=d1["IotId"], Day=7))
    ok(call(old_sdk, "SetDevicePictureLifeCycle", IotId=d1["IotId"], Day=8))
    before = everything(old_sdk, devices)

    for action in ("SetDeviceRecordLifeCycle", "SetDevicePictureLifeCycle"):
        for day in (3651, -1, 100000, "7d", "1.5"):
            for d in devices:
                assert gateway_error(lambda: call(old_sdk, action, IotId=d["IotId"], Day=day)) == "InvalidParameter"
        assert gateway_error(lambda: call(old_sdk, action, IotId=d1["IotId"])) == "MissingParameter"
        assert gateway_error(lambda: call(old_sdk, action, Day=5)) == "MissingParameter"
        assert gateway_error(lambda: call(old_sdk, action, ProductKey=d1["ProductKey"], Day=5)) == "MissingParameter"
        for addr in ({"IotId": "no-such-device"}, {"ProductKey": d1["ProductKey"], "DeviceName": "nobody"}):
            business_error(call(old_sdk, action, **addr, Day=5), "403", "tenant auth error")

    assert gateway_error(lambda: call(old_sdk, "QueryDeviceRecordLifeCycle")) == "MissingParameter"
    assert gateway_error(lambda: call(old_sdk, "QueryDeviceRecordLifeCycle",
                                      DeviceLists=[f"id{i}" for i in range(101)])) == "InvalidParameter"
    assert gateway_error(lambda: old_sdk.common("QueryDeviceRecordLifeCycle", "Linkvisual",
                                                DeviceList='{"a": 1}')) == "InvalidParameter"
    # one unknown device in the list refuses the whole query, never saying which
    business_error(call(old_sdk, "QueryDeviceRecordLifeCycle", DeviceLists=[d1["IotId"], "no-such-device"]),
                   "403", "tenant auth error")
    business_error(call(old_sdk, "QueryDevicePictureLifeCycle", IotId="no-such-device"), "403", "tenant auth error")
    assert gateway_error(lambda: call(old_sdk, "QueryDevicePictureLifeCycle")) == "MissingParameter"
    assert everything(old_sdk, devices) == before


def test_new_sdk(new_lv, old_sdk):
    d1, d2 = make_devices(old_sdk, 2)
    body = new_lv.query_device_record_life_cycle(
        lv.QueryDeviceRecordLifeCycleRequest(device_list=[d1["IotId"], d2["IotId"]])).body
    business_error(body, "466", NONE_SET)
    business_error(new_lv.query_device_picture_life_cycle(
        lv.QueryDevicePictureLifeCycleRequest(iot_id=d1["IotId"])).body, "466", NONE_SET)

    ok(new_lv.set_device_record_life_cycle(lv.SetDeviceRecordLifeCycleRequest(iot_id=d1["IotId"], day=3)).body)
    ok(new_lv.set_device_record_life_cycle(lv.SetDeviceRecordLifeCycleRequest(
        product_key=d2["ProductKey"], device_name=d2["DeviceName"], day=3650)).body)
    ok(new_lv.set_device_picture_life_cycle(lv.SetDevicePictureLifeCycleRequest(iot_id=d2["IotId"], day=1)).body)

    data = ok(new_lv.query_device_record_life_cycle(
        lv.QueryDeviceRecordLifeCycleRequest(device_list=[d1["IotId"], d2["IotId"]])).body)
    assert all(isinstance(x, lv.QueryDeviceRecordLifeCycleResponseBodyData) for x in data)
    assert [(x.iot_id, x.day) for x in data] == [(d1["IotId"], 3), (d2["IotId"], 3650)]
    pic = ok(new_lv.query_device_picture_life_cycle(lv.QueryDevicePictureLifeCycleRequest(iot_id=d2["IotId"])).body)
    assert isinstance(pic, lv.QueryDevicePictureLifeCycleResponseBodyData)
    assert (pic.iot_id, pic.day) == (d2["IotId"], 1)

    for day in (3651, -1):
        assert gateway_error(lambda: new_lv.set_device_record_life_cycle(
            lv.SetDeviceRecordLifeCycleRequest(iot_id=d1["IotId"], day=day))) == "InvalidParameter"
        assert gateway_error(lambda: new_lv.set_device_picture_life_cycle(
            lv.SetDevicePictureLifeCycleRequest(iot_id=d1["IotId"], day=day))) == "InvalidParameter"
    business_error(new_lv.set_device_record_life_cycle(
        lv.SetDeviceRecordLifeCycleRequest(iot_id="no-such-device", day=1)).body, "403", "tenant auth error")
    assert gateway_error(lambda: new_lv.query_device_record_life_cycle(
        lv.QueryDeviceRecordLifeCycleRequest())) == "MissingParameter"
    again = ok(new_lv.query_device_record_life_cycle(
        lv.QueryDeviceRecordLifeCycleRequest(device_list=[d1["IotId"], d2["IotId"]])).body)
    assert [(x.iot_id, x.day) for x in again] == [(d1["IotId"], 3), (d2["IotId"], 3650)]


@pytest.mark.parametrize("address", ["iot", "pk"])
def test_other_tenant_can_neither_see_nor_change_lifecycles(server, old_sdk, address):
    mine = make_devices(old_sdk, 2)
    ok(call(old_sdk, "SetDeviceRecordLifeCycle", IotId=mine[0]["IotId"], Day=7))
    ok(call(old_sdk, "SetDevicePictureLifeCycle", IotId=mine[0]["IotId"], Day=9))
    before = everything(old_sdk, mine)

    other_key = server.new_key()
    other, other_new = OldSdk(server, other_key), Client(new_config(server, other_key, None))
    [theirs] = make_devices(other, 1)
    ok(call(other, "SetDeviceRecordLifeCycle", IotId=theirs["IotId"], Day=1))
    for d in mine:
        addr = {"IotId": d["IotId"]} if address == "iot" else {"ProductKey": d["ProductKey"],
                                                                 "DeviceName": d["DeviceName"]}
        for action in ("SetDeviceRecordLifeCycle", "SetDevicePictureLifeCycle"):
            business_error(other.common(action, "Linkvisual", **addr, Day=365), "403", "tenant auth error")
        business_error(other.common("QueryDevicePictureLifeCycle", "Linkvisual", **addr), "403", "tenant auth error")
        business_error(call(other, "QueryDeviceRecordLifeCycle", DeviceLists=[d["IotId"]]), "403",
                       "tenant auth error")
        # mixing in their own device does not help
        business_error(call(other, "QueryDeviceRecordLifeCycle", DeviceLists=[theirs["IotId"], d["IotId"]]), "403",
                       "tenant auth error")
        business_error(other_new.query_device_record_life_cycle(
            lv.QueryDeviceRecordLifeCycleRequest(device_list=[d["IotId"]])).body, "403", "tenant auth error")
        business_error(other_new.set_device_picture_life_cycle(
            lv.SetDevicePictureLifeCycleRequest(iot_id=d["IotId"], day=1)).body, "403", "tenant auth error")

    assert everything(old_sdk, mine) == before
    assert records(other, [theirs["IotId"]]) == [{"IotId": theirs["IotId"], "Day": 1}]
    business_error(call(old_sdk, "SetDeviceRecordLifeCycle", IotId=theirs["IotId"], Day=2), "403", "tenant auth error")
    assert records(other, [theirs["IotId"]]) == [{"IotId": theirs["IotId"], "Day": 1}]
