"""Errors as values: every failure a caller can see, with the code they can look up.

Two families, as the cloud API distinguishes them (see docs/api.md, "Errors"):

* ``GatewayError`` — the request itself is unacceptable (signature, key, action,
  malformed or missing parameter, throttling). Rendered as HTTP 4xx/5xx with
  ``{RequestId, HostId, Code, Message, Recommend}``.
* ``BusinessError`` — the request was well formed but the rule of the domain says no.
  Rendered as HTTP 200 with ``Success: false``, ``Code`` and ``ErrorMessage``; codes and
  messages come from the seed's catalogue (section 11) where it has a matching entry.

They are raised where the rule is and turned into wire format in one place
(``iotvideo.openapi.render``).
"""

from __future__ import annotations


class GatewayError(Exception):
    """A request rejected before it reaches the domain (HTTP status != 200)."""

    def __init__(self, status: int, code: str, message: str, recommend: str = "") -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.recommend = recommend


def missing_parameter(name: str) -> GatewayError:
    return GatewayError(400, "MissingParameter", f"The input parameter {name} that is mandatory for processing this request is not supplied.")


def invalid_parameter(name: str, why: str) -> GatewayError:
    return GatewayError(400, "InvalidParameter", f"The specified parameter {name} is not valid: {why}")


class BusinessError(Exception):
    """A domain rule refused the request (HTTP 200, ``Success: false``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# --- the seed's catalogue (section 11), plus our own entries in the same classes ---
# 403: permission; 460: parameter/business-rule; 466: device/business state.

def forbidden() -> BusinessError:
    return BusinessError("403", "request forbidden.")


def tenant_auth_error() -> BusinessError:
    """The object does not exist *or* belongs to another tenant: never say which."""
    return BusinessError("403", "tenant auth error")


def device_offline() -> BusinessError:
    return BusinessError("466", "device status is offline.")


def device_initial() -> BusinessError:
    return BusinessError("466", "device status is initial.")


def device_disabled() -> BusinessError:
    return BusinessError("466", "device status is disable.")


def lifecycle_not_exist() -> BusinessError:
    return BusinessError("466", "deviceList lifecycle not exist.")


def not_found(kind: str) -> BusinessError:
    """An ID of the caller's tenant that names nothing (template, plan, product…)."""
    return BusinessError("460", f"{kind} not exist.")


def conflict(message: str) -> BusinessError:
    """A rule of the domain forbids the change (in use, already bound, default…)."""
    return BusinessError("460", message)
