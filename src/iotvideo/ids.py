"""Identifiers and secrets, all from the OS's cryptographic random source."""

from __future__ import annotations

import secrets
import string

_ALNUM = string.ascii_letters + string.digits


def _alnum(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def access_key_id() -> str:
    return "LTAI" + _alnum(20)


def access_key_secret() -> str:
    return _alnum(30)


def product_key() -> str:
    return "a1" + _alnum(9)


def product_secret() -> str:
    return _alnum(16)


def iot_id() -> str:
    return _alnum(20) + "000101"


def device_name() -> str:
    return _alnum(20)


def device_secret() -> str:
    return secrets.token_hex(16)


def object_id() -> str:
    """TemplateId, PlanId and the like: 32 hex chars."""
    return secrets.token_hex(16)


def request_id() -> str:
    h = secrets.token_hex(16).upper()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
