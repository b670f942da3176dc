"""The server starts, answers /healthz, and one call per SDK family round-trips."""

from __future__ import annotations

import httpx
from alibabacloud_linkvisual20180120 import models as lv


def test_healthz(server):
    assert httpx.get(f"http://{server.endpoint}/healthz").json() == {"status": "ok"}


def test_new_sdk_round_trip(new_lv):
    body = new_lv.query_time_template(lv.QueryTimeTemplateRequest(current_page=1, page_size=10)).body
    assert body.success is True
    assert body.data.total == 1 and body.data.list[0].default == 1 and body.data.list[0].all_day == 1


def test_old_sdk_round_trip(old_sdk):
    from aliyunsdklinkvisual.request.v20180120.QueryTimeTemplateRequest import QueryTimeTemplateRequest

    body = old_sdk.call(QueryTimeTemplateRequest())
    assert body["Success"] is True and body["Data"]["Total"] == 1
