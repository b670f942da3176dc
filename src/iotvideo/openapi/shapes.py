"""Request and response shapes shared by many actions: device addressing, paging,
stream types and the time-template body. Written once, used everywhere."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from iotvideo.domain.devices import DeviceRef
from iotvideo.domain.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page, PageRequest
from iotvideo.domain.templates import TimeTemplate
from iotvideo.errors import missing_parameter
from iotvideo.openapi.params import Params

T = TypeVar("T")


def device_ref(p: Params) -> DeviceRef:
    """DEV: ``IotId``, or ``ProductKey`` + ``DeviceName``; IotId wins when both are given."""
    iot_id = p.str("IotId", max_len=64)
    if iot_id:
        return DeviceRef(iot_id=iot_id)
    pk = p.str("ProductKey", max_len=64)
    dn = p.str("DeviceName", max_len=64)
    if pk and dn:
        return DeviceRef(product_key=pk, device_name=dn)
    raise missing_parameter("IotId")


def page_request(p: Params) -> PageRequest:
    current = p.int("CurrentPage", default=1, min=1, max=1_000_000)
    size = p.int("PageSize", default=DEFAULT_PAGE_SIZE, min=1, max=MAX_PAGE_SIZE)
    assert current is not None and size is not None
    return PageRequest(current, size)


def stream_type(p: Params, required: bool = False) -> int:
    st = p.int("StreamType", required=required, default=0, min=0, max=1)
    assert st is not None
    return st


def page_data(page: Page[T], item: Callable[[T], dict[str, Any]]) -> dict[str, Any]:
    """PG(x): ``{List, Page, PageSize, PageCount, Total}``."""
    return {
        "List": [item(x) for x in page.items],
        "Page": page.request.current,
        "PageSize": page.request.size,
        "PageCount": page.page_count,
        "Total": page.total,
    }


def template_body(t: TimeTemplate) -> dict[str, Any]:
    """TPL: ``{AllDay, Default, Name, TemplateId, TimeSectionList}``."""
    return {
        "AllDay": int(t.all_day),
        "Default": int(t.is_default),
        "Name": t.name,
        "TemplateId": t.id,
        "TimeSectionList": [{"Begin": s.begin, "DayOfWeek": s.day_of_week, "End": s.end} for s in t.sections],
    }
