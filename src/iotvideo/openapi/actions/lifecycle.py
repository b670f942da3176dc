"""Storage lifecycle actions (seed section 3)."""

from __future__ import annotations

from typing import Any

from iotvideo.domain.lifecycle import MAX_DAYS
from iotvideo.errors import missing_parameter
from iotvideo.openapi.registry import Call, action
from iotvideo.openapi.shapes import device_ref


def _day(call: Call) -> int:
    day = call.params.int("Day", required=True, min=0, max=MAX_DAYS)
    assert day is not None
    return day


@action("SetDeviceRecordLifeCycle")
async def set_record(call: Call) -> None:
    await call.services.lifecycles.set(call.tenant_id, device_ref(call.params), "record", _day(call))


@action("SetDevicePictureLifeCycle")
async def set_picture(call: Call) -> None:
    await call.services.lifecycles.set(call.tenant_id, device_ref(call.params), "picture", _day(call))


@action("QueryDeviceRecordLifeCycle")
async def query_record(call: Call) -> dict[str, Any]:
    iot_ids = call.params.list("DeviceList", max_items=100)
    if not iot_ids:
        raise missing_parameter("DeviceList")
    found = await call.services.lifecycles.get_many(call.tenant_id, iot_ids, "record")
    return {"Data": [{"IotId": i, "Day": d} for i, d in found]}


@action("QueryDevicePictureLifeCycle")
async def query_picture(call: Call) -> dict[str, Any]:
    iot_id, day = await call.services.lifecycles.get(call.tenant_id, device_ref(call.params), "picture")
    return {"Data": {"IotId": iot_id, "Day": day}}
