"""IoT-platform actions that talk to devices through the device link (product ``Iot``):
InvokeThingService, SetDeviceProperty, QueryDevicePropertyStatus, GetThingModelTsl."""

from __future__ import annotations

import json
from typing import Any

from iotvideo.devicelink import tsl
from iotvideo.devicelink.link import Target, dumps_result
from iotvideo.errors import invalid_parameter
from iotvideo.openapi.params import Params
from iotvideo.openapi.registry import Call, action
from iotvideo.openapi.shapes import device_ref

MAX_ARGS = 64 * 1024


async def _target(call: Call) -> Target:
    return Target(*await call.services.registry.address(call.tenant_id, device_ref(call.params)))


def _json_object(p: Params, name: str, required: bool) -> dict[str, Any]:
    raw = p.str(name, required=required, max_len=MAX_ARGS) or "{}"
    try:
        value = json.loads(raw)
    except ValueError:
        raise invalid_parameter(name, "must be a JSON object") from None
    if not isinstance(value, dict):
        raise invalid_parameter(name, "must be a JSON object")
    return value


@action("InvokeThingService", product="Iot")
async def invoke_thing_service(call: Call) -> dict[str, Any]:
    """Async services answer at once with the MessageId; sync (RRPC) services wait for
    the device's reply and answer its data as ``Result`` (JSON text)."""
    p = call.params
    identifier = p.str("Identifier", required=True, max_len=64)
    assert identifier is not None
    target = await _target(call)
    result = await call.services.link.call(target, identifier, _json_object(p, "Args", False), wait=False)
    if result.code is not None and result.code != 200:
        return {"Success": False, "Code": str(result.code), "ErrorMessage": result.message or "device error",
                "Data": {"MessageId": result.message_id, "Result": dumps_result(result.data)}}
    body: dict[str, Any] = {"MessageId": result.message_id, "Result": ""}
    if result.code is not None:
        body["Result"] = dumps_result(result.data)
    return {"Data": body}


@action("SetDeviceProperty", product="Iot")
async def set_device_property(call: Call) -> dict[str, Any]:
    items = _json_object(call.params, "Items", True)
    result = await call.services.link.set_properties(await _target(call), items)
    return {"Data": {"MessageId": result.message_id}}


@action("QueryDevicePropertyStatus", product="Iot")
async def query_device_property_status(call: Call) -> dict[str, Any]:
    target = await _target(call)
    values = {v.identifier: v for v in await call.services.device_state.properties(target.iot_id)}
    infos = []
    for ident, spec in tsl.PROPERTIES.items():
        dt = spec.get("dataType", {})
        v = values.get(ident)
        info: dict[str, Any] = {"Identifier": ident, "Name": spec.get("name", ident),
                                "DataType": dt.get("type", ""), "Unit": dt.get("specs", {}).get("unit", "")
                                if isinstance(dt.get("specs"), dict) else ""}
        if v is not None:
            info["Value"] = v.value if isinstance(v.value, str) else json.dumps(v.value, ensure_ascii=False)
            info["Time"] = str(v.time_ms)
        infos.append(info)
    return {"Data": {"List": {"PropertyStatusInfo": infos}}}


@action("GetThingModelTsl", product="Iot")
async def get_thing_model_tsl(call: Call) -> dict[str, Any]:
    pk = call.params.str("ProductKey", required=True, max_len=64)
    assert pk is not None
    await call.services.registry.check_product(call.tenant_id, pk)
    return {"Data": {"TslStr": tsl.tsl_json(pk)}}
