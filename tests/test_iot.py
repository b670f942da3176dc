"""The IoT-platform actions (product ``Iot``) that give devices their identities.

Through the new SDK (``alibabacloud_iot20180120``, signed V3 and 'v2') — every answer
must parse into its models — and through the old SDK's ``CommonRequest`` (V1).
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from alibabacloud_iot20180120 import models as iot
from alibabacloud_tea_openapi.exceptions import ClientException

from conftest import Key, OldSdk, ServerInfo, new_config

GMT = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
DEVICE_NAME = re.compile(r"[A-Za-z0-9\-_@.:]{4,32}")


def new_client(server: ServerInfo, key: Key, algorithm: str | None = None):  # type: ignore[no-untyped-def]
    from alibabacloud_iot20180120.client import Client

    return Client(new_config(server, key, algorithm))


def product(client, name: str = "camera") -> str:  # type: ignore[no-untyped-def]
    body = client.create_product(iot.CreateProductRequest(product_name=name, node_type=0)).body
    assert body.success is True, body
    return str(body.product_key)


def register(client, pk: str, name: str | None = None, nickname: str | None = None):  # type: ignore[no-untyped-def]
    body = client.register_device(iot.RegisterDeviceRequest(product_key=pk, device_name=name, nickname=nickname)).body
    assert body.success is True, body
    return body.data


def detail(client, **ref: str):  # type: ignore[no-untyped-def]
    return client.query_device_detail(iot.QueryDeviceDetailRequest(**ref)).body


def refused(body: Any, code: str = "403", message: str | None = "tenant auth error") -> None:
    """A business error: HTTP 200, Success false, the seed's code and message."""
    assert body.success is False, body
    assert body.code == code
    if message is not None:
        assert body.error_message == message
    assert body.request_id


# --- products -------------------------------------------------------------------------

def test_create_product(new_iot) -> None:  # type: ignore[no-untyped-def]
    body = new_iot.create_product(iot.CreateProductRequest(
        product_name="Door camera", node_type=1, data_format=0, description="front door", auth_type="secret",
        id_2=False, publish_auto=True)).body
    assert body.success is True and body.request_id
    d = body.data
    assert isinstance(d, iot.CreateProductResponseBodyData)
    assert body.product_key == d.product_key and re.fullmatch(r"[A-Za-z0-9]{11}", d.product_key)
    assert (d.product_name, d.node_type, d.data_format, d.description, d.auth_type) == (
        "Door camera", 1, 0, "front door", "secret")
    assert d.product_secret and d.id_2 is False
    # Defaults: a device (0) speaking Alink JSON (1).
    d = new_iot.create_product(iot.CreateProductRequest(product_name="Plain")).body.data
    assert (d.node_type, d.data_format, d.auth_type) == (0, 1, "secret")


def test_create_product_refuses_bad_input(new_iot) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientException) as e:
        new_iot.create_product(iot.CreateProductRequest(node_type=0))
    assert e.value.code == "MissingParameter" and e.value.status_code == 400
    with pytest.raises(ClientException) as e:
        new_iot.create_product(iot.CreateProductRequest(product_name="x", node_type=7))
    assert e.value.code == "InvalidParameter"
    refused(new_iot.create_product(iot.CreateProductRequest(product_name="x" * 65)).body, "460", None)
    total = new_iot.query_product_list(iot.QueryProductListRequest(current_page=1, page_size=10)).body.data.total
    assert total == 0


def test_query_product_list_paging_and_device_count(new_iot) -> None:  # type: ignore[no-untyped-def]
    keys = [product(new_iot, f"p{i}") for i in range(3)]
    for name in ("cam-a", "cam-b"):
        register(new_iot, keys[0], name)
    seen: dict[str, Any] = {}
    for page, expected in ((1, 2), (2, 1)):
        data = new_iot.query_product_list(iot.QueryProductListRequest(current_page=page, page_size=2)).body.data
        assert isinstance(data, iot.QueryProductListResponseBodyData)
        assert (data.current_page, data.page_size, data.page_count, data.total) == (page, 2, 2, 3)
        assert len(data.list.product_info) == expected
        seen.update({p.product_key: p for p in data.list.product_info})
    assert set(seen) == set(keys)
    assert seen[keys[0]].device_count == 2 and seen[keys[1]].device_count == 0
    p = seen[keys[0]]
    assert (p.product_name, p.node_type, p.data_format, p.auth_type) == ("p0", 0, 1, "secret")
    assert isinstance(p.gmt_create, int) and abs(p.gmt_create / 1000 - datetime.now().timestamp()) < 600
    # Past the end: an empty page, same totals.
    data = new_iot.query_product_list(iot.QueryProductListRequest(current_page=5, page_size=2)).body.data
    assert data.total == 3 and not data.list.product_info


# --- devices --------------------------------------------------------------------------

def test_register_device(new_iot) -> None:  # type: ignore[no-untyped-def]
    pk = product(new_iot)
    d = register(new_iot, pk, "cam-01:front@home_1.2", "Front door")
    assert isinstance(d, iot.RegisterDeviceResponseBodyData)
    assert (d.product_key, d.device_name, d.nickname) == (pk, "cam-01:front@home_1.2", "Front door")
    assert d.iot_id and re.fullmatch(r"[0-9a-f]{32}", d.device_secret)
    # Without a DeviceName one is generated, following the naming rule.
    g = register(new_iot, pk)
    assert DEVICE_NAME.fullmatch(g.device_name) and g.iot_id != d.iot_id and g.device_secret != d.device_secret
    assert detail(new_iot, iot_id=g.iot_id).data.device_name == g.device_name


@pytest.mark.parametrize("name", ["abc", "x" * 33, "bad name", "cam/1", "摄像头一号", "cam#1", "cam\t1"])
def test_register_device_refuses_invalid_names(new_iot, name: str) -> None:  # type: ignore[no-untyped-def]
    pk = product(new_iot)
    refused(new_iot.register_device(iot.RegisterDeviceRequest(product_key=pk, device_name=name)).body, "460", None)
    assert new_iot.query_device(iot.QueryDeviceRequest(product_key=pk)).body.total == 0


def test_register_device_refuses_duplicates(new_iot) -> None:  # type: ignore[no-untyped-def]
    pk, other_pk = product(new_iot, "a"), product(new_iot, "b")
    first = register(new_iot, pk, "cam-dup")
    refused(new_iot.register_device(iot.RegisterDeviceRequest(product_key=pk, device_name="cam-dup")).body, "460", None)
    # The same name in another product is another device.
    assert register(new_iot, other_pk, "cam-dup").iot_id != first.iot_id
    body = new_iot.query_device(iot.QueryDeviceRequest(product_key=pk, current_page=1, page_size=10)).body
    assert body.total == 1 and body.data.device_info[0].iot_id == first.iot_id
    assert detail(new_iot, iot_id=first.iot_id).data.device_secret == first.device_secret


def test_register_device_needs_a_product_of_the_tenant(new_iot) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientException) as e:
        new_iot.register_device(iot.RegisterDeviceRequest(device_name="cam-1"))
    assert e.value.code == "MissingParameter"
    refused(new_iot.register_device(iot.RegisterDeviceRequest(product_key="a1NoSuchPk", device_name="cam-1")).body)


def test_query_device_detail(new_iot) -> None:  # type: ignore[no-untyped-def]
    pk = product(new_iot, "Detail camera")
    reg = register(new_iot, pk, "cam-detail", "nick")
    before = datetime.now(timezone.utc)
    body = detail(new_iot, iot_id=reg.iot_id)
    assert body.success is True
    d = body.data
    assert isinstance(d, iot.QueryDeviceDetailResponseBodyData)
    assert (d.iot_id, d.product_key, d.product_name, d.device_name, d.device_secret, d.nickname) == (
        reg.iot_id, pk, "Detail camera", "cam-detail", reg.device_secret, "nick")
    assert d.status == "UNACTIVE" and d.node_type == 0
    assert GMT.fullmatch(d.gmt_create) and UTC.fullmatch(d.utc_create)
    created = datetime.strptime(d.utc_create, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert abs((before - created).total_seconds()) < 600
    # Gmt* is the same instant in GMT+8 (the IoT platform's convention).
    assert datetime.strptime(d.gmt_create, "%Y-%m-%d %H:%M:%S") == (created + timedelta(hours=8)).replace(
        tzinfo=None, microsecond=0)
    assert not d.gmt_active and not d.utc_active and not d.gmt_online and not d.utc_online
    # ProductKey + DeviceName address the same device; IotId wins when both are given.
    assert detail(new_iot, product_key=pk, device_name="cam-detail").data.iot_id == reg.iot_id
    other = register(new_iot, pk, "cam-other")
    assert detail(new_iot, iot_id=other.iot_id, product_key=pk, device_name="cam-detail").data.iot_id == other.iot_id
    refused(detail(new_iot, iot_id="nope"))
    refused(detail(new_iot, product_key=pk, device_name="cam-nope"))


def test_query_device_paging(new_iot) -> None:  # type: ignore[no-untyped-def]
    pk = product(new_iot)
    regs = {register(new_iot, pk, f"cam-page-{i}").iot_id for i in range(3)}
    found = set()
    for page, expected in ((1, 2), (2, 1)):
        body = new_iot.query_device(iot.QueryDeviceRequest(product_key=pk, current_page=page, page_size=2)).body
        assert isinstance(body, iot.QueryDeviceResponseBody) and body.success is True
        assert (body.page, body.page_size, body.page_count, body.total) == (page, 2, 2, 3)
        assert len(body.data.device_info) == expected
        for info in body.data.device_info:
            assert isinstance(info, iot.QueryDeviceResponseBodyDataDeviceInfo)
            assert info.product_key == pk and info.device_status == "UNACTIVE" and info.device_secret
            assert info.device_name.startswith("cam-page-")
            assert GMT.fullmatch(info.gmt_create) and UTC.fullmatch(info.utc_create)
            found.add(info.iot_id)
    assert found == regs
    # Defaults: page 1 of 10.
    body = new_iot.query_device(iot.QueryDeviceRequest(product_key=pk)).body
    assert (body.page, body.page_size, body.total, len(body.data.device_info)) == (1, 10, 3, 3)


def test_disable_enable_delete(new_iot) -> None:  # type: ignore[no-untyped-def]
    pk = product(new_iot)
    d = register(new_iot, pk, "cam-life")
    assert new_iot.disable_thing(iot.DisableThingRequest(iot_id=d.iot_id)).body.success is True
    assert detail(new_iot, iot_id=d.iot_id).data.status == "DISABLE"
    info = new_iot.query_device(iot.QueryDeviceRequest(product_key=pk)).body.data.device_info[0]
    assert info.device_status == "DISABLE"
    # Never connected: back to UNACTIVE. ProductKey + DeviceName work too.
    assert new_iot.enable_thing(iot.EnableThingRequest(product_key=pk, device_name="cam-life")).body.success is True
    assert detail(new_iot, iot_id=d.iot_id).data.status == "UNACTIVE"
    body = new_iot.delete_device(iot.DeleteDeviceRequest(iot_id=d.iot_id)).body
    assert isinstance(body, iot.DeleteDeviceResponseBody) and body.success is True
    refused(detail(new_iot, iot_id=d.iot_id))
    refused(new_iot.delete_device(iot.DeleteDeviceRequest(iot_id=d.iot_id)).body)
    refused(new_iot.enable_thing(iot.EnableThingRequest(iot_id=d.iot_id)).body)
    assert new_iot.query_device(iot.QueryDeviceRequest(product_key=pk)).body.total == 0
    # The name is free again.
    assert register(new_iot, pk, "cam-life").iot_id != d.iot_id


# --- tenancy ----------------------------------------------------------------------------

def test_cross_tenant_access_is_refused(server: ServerInfo, new_iot) -> None:  # type: ignore[no-untyped-def]
    pk = product(new_iot, "mine")
    d = register(new_iot, pk, "cam-mine")
    stranger = new_client(server, server.new_key())
    refused(detail(stranger, iot_id=d.iot_id))
    refused(detail(stranger, product_key=pk, device_name="cam-mine"))
    refused(stranger.register_device(iot.RegisterDeviceRequest(product_key=pk, device_name="cam-theirs")).body)
    refused(stranger.query_device(iot.QueryDeviceRequest(product_key=pk)).body)
    refused(stranger.disable_thing(iot.DisableThingRequest(iot_id=d.iot_id)).body)
    refused(stranger.enable_thing(iot.EnableThingRequest(product_key=pk, device_name="cam-mine")).body)
    refused(stranger.delete_device(iot.DeleteDeviceRequest(iot_id=d.iot_id)).body)
    assert stranger.query_product_list(iot.QueryProductListRequest(current_page=1, page_size=10)).body.data.total == 0
    # Nothing changed for the owner.
    mine = detail(new_iot, iot_id=d.iot_id).data
    assert (mine.status, mine.device_secret) == ("UNACTIVE", d.device_secret)
    body = new_iot.query_device(iot.QueryDeviceRequest(product_key=pk)).body
    assert body.total == 1 and body.data.device_info[0].device_name == "cam-mine"
    products = new_iot.query_product_list(iot.QueryProductListRequest(current_page=1, page_size=10)).body.data
    assert products.total == 1 and products.list.product_info[0].device_count == 1
    # The stranger's own product may use the same device name.
    assert register(stranger, product(stranger), "cam-mine").iot_id != d.iot_id


# --- the old SDK (CommonRequest, V1) --------------------------------------------------------

def test_old_sdk_common_request(old_sdk: OldSdk) -> None:
    created = old_sdk.common("CreateProduct", ProductName="old sdk", NodeType=0, Id2="False")
    assert created["Success"] is True and created["ProductKey"] == created["Data"]["ProductKey"]
    pk = created["ProductKey"]
    reg = old_sdk.common("RegisterDevice", ProductKey=pk, DeviceName="cam-old", Nickname="old")["Data"]
    assert (reg["ProductKey"], reg["DeviceName"], reg["Nickname"]) == (pk, "cam-old", "old")
    gen = old_sdk.common("RegisterDevice", ProductKey=pk)["Data"]
    assert DEVICE_NAME.fullmatch(gen["DeviceName"])
    dup = old_sdk.common("RegisterDevice", ProductKey=pk, DeviceName="cam-old")
    assert (dup["Success"], dup["Code"]) == (False, "460") and dup["ErrorMessage"]
    d = old_sdk.common("QueryDeviceDetail", IotId=reg["IotId"])["Data"]
    assert (d["Status"], d["DeviceSecret"], d["ProductName"]) == ("UNACTIVE", reg["DeviceSecret"], "old sdk")
    assert GMT.fullmatch(d["GmtCreate"]) and UTC.fullmatch(d["UtcCreate"])
    page = old_sdk.common("QueryDevice", ProductKey=pk, CurrentPage=1, PageSize=1)
    assert (page["Page"], page["PageSize"], page["PageCount"], page["Total"]) == (1, 1, 2, 2)
    assert len(page["Data"]["DeviceInfo"]) == 1
    products = old_sdk.common("QueryProductList", CurrentPage=1, PageSize=10)["Data"]
    assert products["Total"] == 1 and products["List"]["ProductInfo"][0]["DeviceCount"] == 2
    assert old_sdk.common("DisableThing", ProductKey=pk, DeviceName="cam-old")["Success"] is True
    assert old_sdk.common("QueryDeviceDetail", IotId=reg["IotId"])["Data"]["Status"] == "DISABLE"
    assert old_sdk.common("EnableThing", IotId=reg["IotId"])["Success"] is True
    assert old_sdk.common("QueryDeviceDetail", IotId=reg["IotId"])["Data"]["Status"] == "UNACTIVE"
    assert old_sdk.common("DeleteDevice", IotId=reg["IotId"])["Success"] is True
    gone = old_sdk.common("QueryDeviceDetail", IotId=reg["IotId"])
    assert (gone["Success"], gone["Code"], gone["ErrorMessage"]) == (False, "403", "tenant auth error")


def test_old_sdk_cross_tenant(server: ServerInfo, old_sdk: OldSdk) -> None:
    pk = old_sdk.common("CreateProduct", ProductName="mine")["ProductKey"]
    reg = old_sdk.common("RegisterDevice", ProductKey=pk, DeviceName="cam-mine")["Data"]
    stranger = OldSdk(server, server.new_key())
    for action, params in [("QueryDeviceDetail", {"IotId": reg["IotId"]}),
                           ("QueryDeviceDetail", {"ProductKey": pk, "DeviceName": "cam-mine"}),
                           ("RegisterDevice", {"ProductKey": pk, "DeviceName": "cam-x"}),
                           ("QueryDevice", {"ProductKey": pk}),
                           ("DisableThing", {"IotId": reg["IotId"]}),
                           ("DeleteDevice", {"IotId": reg["IotId"]})]:
        body = stranger.common(action, **params)
        assert (body["Success"], body["Code"], body["ErrorMessage"]) == (False, "403", "tenant auth error"), action
    d = old_sdk.common("QueryDeviceDetail", IotId=reg["IotId"])["Data"]
    assert d["Status"] == "UNACTIVE"
    assert old_sdk.common("QueryDevice", ProductKey=pk)["Total"] == 1


def test_concurrent_registrations_of_one_name(server: ServerInfo, key: Key) -> None:
    """Racing RegisterDevice calls for one name: exactly one wins, the rest are refused, none fails."""
    from concurrent.futures import ThreadPoolExecutor

    sdk = OldSdk(server, key)
    pk = sdk.common("CreateProduct", ProductName="race")["ProductKey"]

    def attempt(i: int) -> dict[str, Any]:
        return OldSdk(server, key).common("RegisterDevice", ProductKey=pk, DeviceName="cam-race")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(attempt, range(8)))
    assert sum(r["Success"] is True for r in results) == 1
    assert all(r["Code"] == "460" for r in results if r["Success"] is False)
    assert sdk.common("QueryDevice", ProductKey=pk)["Total"] == 1


def test_enable_keeps_status_of_an_enabled_device(server: ServerInfo, new_iot) -> None:  # type: ignore[no-untyped-def]
    """EnableThing on a device that is not disabled changes nothing (an ONLINE device stays ONLINE);
    a disabled device that was once active comes back OFFLINE."""
    from sqlalchemy import update

    from iotvideo.store.schema import devices

    d = register(new_iot, product(new_iot), "cam-online")

    async def set_online(sv):  # type: ignore[no-untyped-def]
        async with sv.db.begin() as conn:
            await conn.execute(update(devices).where(devices.c.iot_id == d.iot_id)
                               .values(status="ONLINE", active_ms=1_700_000_000_000, online_ms=1_700_000_000_000))

    server.run(set_online)
    assert new_iot.enable_thing(iot.EnableThingRequest(iot_id=d.iot_id)).body.success is True
    got = detail(new_iot, iot_id=d.iot_id).data
    assert got.status == "ONLINE" and GMT.fullmatch(got.gmt_active) and got.utc_online == "2023-11-14T22:13:20.000Z"
    new_iot.disable_thing(iot.DisableThingRequest(iot_id=d.iot_id))
    new_iot.disable_thing(iot.DisableThingRequest(iot_id=d.iot_id))
    assert detail(new_iot, iot_id=d.iot_id).data.status == "DISABLE"
    new_iot.enable_thing(iot.EnableThingRequest(iot_id=d.iot_id))
    assert detail(new_iot, iot_id=d.iot_id).data.status == "OFFLINE"


def test_lists_are_newest_first(old_sdk: OldSdk) -> None:
    """As the IoT platform documents for QueryProductList and QueryDevice."""
    pks = []
    for i in range(3):
        pks.append(old_sdk.common("CreateProduct", ProductName=f"order{i}")["ProductKey"])
        time.sleep(0.005)
    listed = old_sdk.common("QueryProductList", CurrentPage=1, PageSize=10)["Data"]["List"]["ProductInfo"]
    assert [p["ProductKey"] for p in listed] == pks[::-1]
    names = []
    for i in range(3):
        names.append(old_sdk.common("RegisterDevice", ProductKey=pks[0], DeviceName=f"cam-order-{i}")["Data"]["DeviceName"])
        time.sleep(0.005)
    infos = old_sdk.common("QueryDevice", ProductKey=pks[0], PageSize=2)["Data"]["DeviceInfo"]
    assert [x["DeviceName"] for x in infos] == names[::-1][:2]
