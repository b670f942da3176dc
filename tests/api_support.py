"""Helpers shared by the configuration-API tests (templates, plans, lifecycle):
building old-SDK requests by action name, asserting the two error families with either
SDK generation, and making devices through the Iot actions."""

from __future__ import annotations

import importlib
import secrets
from collections.abc import Callable
from typing import Any

import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from Tea.exceptions import TeaException


def old_req(action: str, **params: Any) -> Any:
    """The old SDK's request class for ``action``, with ``set_<Name>(value)`` called per
    keyword (so ``TimeSectionss=[…]`` and ``DeviceLists=[…]`` use the SDK's own list
    flattening)."""
    module = importlib.import_module(f"aliyunsdklinkvisual.request.v20180120.{action}Request")
    req = getattr(module, f"{action}Request")()
    for name, value in params.items():
        getattr(req, f"set_{name}")(value)
    return req


def gateway_error(call: Callable[[], Any], status: int = 400) -> str:
    """Runs ``call``, which must be refused by the gateway with HTTP ``status``;
    returns the error code, from either SDK generation's exception."""
    try:
        call()
    except ServerException as e:  # old SDK
        assert e.get_http_status() == status, str(e)
        return str(e.get_error_code())
    except TeaException as e:  # new SDK (any signature version)
        got = getattr(e, "status_code", None) or getattr(e, "statusCode", None)
        assert got == status, str(e)
        return str(e.code)
    pytest.fail("the call was not refused by the gateway")


def _fields(body: Any) -> tuple[Any, Any, Any, Any]:
    if isinstance(body, dict):
        return body.get("Success"), body.get("Code"), body.get("ErrorMessage"), body.get("RequestId")
    return body.success, body.code, body.error_message, body.request_id


def business_error(body: Any, code: str, message: str | None = None) -> str:
    """Asserts a business refusal (HTTP 200, Success false) in an old-SDK dict or a
    new-SDK body model; returns the ErrorMessage."""
    success, got_code, got_message, request_id = _fields(body)
    assert success is False, body
    assert str(got_code) == code, body
    assert got_message, body
    assert request_id, body
    if message is not None:
        assert got_message == message, body
    return str(got_message)


def ok(body: Any) -> Any:
    """Asserts success (old-SDK dict or new-SDK body model) and returns ``Data``."""
    success, code, message, request_id = _fields(body)
    assert success is True, body
    assert request_id, body
    assert message in (None, ""), body
    return body.get("Data") if isinstance(body, dict) else getattr(body, "data", None)


def make_devices(old_sdk: Any, n: int, product_name: str | None = None) -> list[dict[str, str]]:
    """``n`` devices of one new product, registered through the Iot actions."""
    created = old_sdk.common("CreateProduct", ProductName=product_name or "cam-" + secrets.token_hex(3))
    pk = ok(created)["ProductKey"]
    out = []
    for i in range(n):
        d = ok(old_sdk.common("RegisterDevice", ProductKey=pk, DeviceName=f"dev{i:04d}"))
        out.append({"IotId": d["IotId"], "ProductKey": d["ProductKey"], "DeviceName": d["DeviceName"]})
    return out


def default_template_id(old_sdk: Any) -> str:
    data = ok(old_sdk.call(old_req("QueryTimeTemplate", CurrentPage=1, PageSize=50)))
    defaults = [t["TemplateId"] for t in data["List"] if t["Default"] == 1]
    assert len(defaults) == 1
    return str(defaults[0])
