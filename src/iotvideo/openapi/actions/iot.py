"""IoT-platform actions (product ``Iot``) that give devices their identities.

Time fields follow the IoT platform: ``Gmt*`` are "yyyy-MM-dd HH:mm:ss" in GMT+8,
``Utc*`` are ISO-8601 UTC with milliseconds.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from iotvideo.domain.devices import Device, Product
from iotvideo.openapi.registry import Call, action
from iotvideo.openapi.shapes import device_ref, page_request

_GMT8 = timezone(timedelta(hours=8))


def gmt(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, _GMT8).strftime("%Y-%m-%d %H:%M:%S")


def utc(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _product_body(p: Product) -> dict[str, Any]:
    return {"ProductKey": p.product_key, "ProductName": p.name, "NodeType": p.node_type,
            "DataFormat": p.data_format, "Description": p.description, "AuthType": p.auth_type}


@action("CreateProduct", product="Iot")
async def create_product(call: Call) -> dict[str, Any]:
    p = call.params
    name = p.str("ProductName", required=True)
    assert name is not None
    # Every parameter is checked before anything is created.
    node_type = p.int("NodeType", default=0, min=0, max=1) or 0
    data_format = p.int("DataFormat", default=1, min=0, max=1) or 0
    description = p.str("Description", default="", max_len=100) or ""
    auth_type = p.str("AuthType", default="secret", max_len=16) or "secret"
    # Id2 / PublishAuto are booleans of the IoT platform ("true"/"True"/…); Id2 is echoed.
    id2 = bool(p.bool("Id2", default=False))
    p.bool("PublishAuto", default=True)
    prod = await call.services.registry.create_product(
        call.tenant_id, name, node_type=node_type, data_format=data_format, description=description,
        auth_type=auth_type)
    return {"ProductKey": prod.product_key, "Data": {**_product_body(prod), "ProductSecret": prod.secret, "Id2": id2}}


@action("QueryProductList", product="Iot")
async def query_product_list(call: Call) -> dict[str, Any]:
    page = await call.services.registry.list_products(call.tenant_id, page_request(call.params))
    items = [{**_product_body(x), "DeviceCount": x.device_count, "GmtCreate": x.created_ms} for x in page.items]
    return {"Data": {"CurrentPage": page.request.current, "PageSize": page.request.size,
                     "PageCount": page.page_count, "Total": page.total, "List": {"ProductInfo": items}}}


@action("RegisterDevice", product="Iot")
async def register_device(call: Call) -> dict[str, Any]:
    p = call.params
    pk = p.str("ProductKey", required=True, max_len=64)
    assert pk is not None
    d = await call.services.registry.register_device(call.tenant_id, pk, p.str("DeviceName", max_len=64),
                                                     p.str("Nickname", default="", max_len=64) or "")
    return {"Data": {"IotId": d.iot_id, "ProductKey": d.product_key, "DeviceName": d.device_name,
                     "DeviceSecret": d.secret, "Nickname": d.nickname}}


@action("QueryDeviceDetail", product="Iot")
async def query_device_detail(call: Call) -> dict[str, Any]:
    d = await call.services.registry.device(call.tenant_id, device_ref(call.params))
    return {"Data": {
        "IotId": d.iot_id, "ProductKey": d.product_key, "ProductName": d.product_name,
        "DeviceName": d.device_name, "DeviceSecret": d.secret, "Nickname": d.nickname, "Status": d.status,
        "IpAddress": d.ip_address, "FirmwareVersion": d.firmware_version, "NodeType": d.node_type,
        "GmtCreate": gmt(d.created_ms), "GmtActive": gmt(d.active_ms), "GmtOnline": gmt(d.online_ms),
        "UtcCreate": utc(d.created_ms), "UtcActive": utc(d.active_ms), "UtcOnline": utc(d.online_ms),
    }}


def _device_info(d: Device) -> dict[str, Any]:
    return {"IotId": d.iot_id, "ProductKey": d.product_key, "DeviceName": d.device_name,
            "DeviceSecret": d.secret, "DeviceStatus": d.status, "Nickname": d.nickname,
            "DeviceType": d.product_name, "GmtCreate": gmt(d.created_ms), "UtcCreate": utc(d.created_ms)}


@action("QueryDevice", product="Iot")
async def query_device(call: Call) -> dict[str, Any]:
    p = call.params
    pk = p.str("ProductKey", required=True, max_len=64)
    assert pk is not None
    page = await call.services.registry.list_devices(call.tenant_id, pk, page_request(p))
    return {"Data": {"DeviceInfo": [_device_info(d) for d in page.items]}, "Page": page.request.current,
            "PageSize": page.request.size, "PageCount": page.page_count, "Total": page.total}


@action("DeleteDevice", product="Iot")
async def delete_device(call: Call) -> None:
    await call.services.registry.delete_device(call.tenant_id, device_ref(call.params))


@action("DisableThing", product="Iot")
async def disable_thing(call: Call) -> None:
    await call.services.registry.set_enabled(call.tenant_id, device_ref(call.params), False)


@action("EnableThing", product="Iot")
async def enable_thing(call: Call) -> None:
    await call.services.registry.set_enabled(call.tenant_id, device_ref(call.params), True)
