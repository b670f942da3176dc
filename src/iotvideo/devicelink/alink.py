"""Alink JSON codec (sans-IO): classify device topics, parse payloads into typed messages, build payloads.

Uplink (device -> cloud) is parsed defensively: :func:`parse_uplink` raises only :class:`AlinkError`
(carrying the reply code to send back) for oversized, non-UTF-8, non-JSON, too deeply nested or
ill-typed payloads.  Builders return ``(topic, payload_bytes)``.  Message ids are strings on the wire
(the platform's are decimal digits, at most 32); integers and any id of up to 64 characters are accepted
and normalised to ``str``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import orjson

__all__ = [
    "CODE_DEVICE_DISABLED", "CODE_DEVICE_NOT_FOUND", "CODE_IDENTIFIER_NOT_DEFINED", "CODE_METHOD_MISSING",
    "CODE_NOT_JSON", "CODE_NOT_SUPPORTED", "CODE_OK", "CODE_PARAM_ERROR", "CODE_REQUEST_ERROR",
    "CODE_SYSTEM_ERROR", "CODE_TIMEOUT", "CODE_TOO_MANY_PROPERTIES", "CODE_TOO_MANY_REQUESTS",
    "CODE_TOPIC_ERROR", "DEFAULT_MAX_PAYLOAD", "MAX_DEPTH", "MAX_PROPERTIES", "REPLY_MESSAGES",
    "AlinkError", "AlinkReply", "DeviceInfoUpdate", "DeviceInfoUpdateMsg", "EventPost", "EventPostMsg",
    "Other", "OtaInform", "OtaInformMsg", "PropertyPost", "PropertyPostMsg", "PropertySet",
    "PropertySetReply", "ReplyMsg", "RrpcReply", "ServiceCall", "ServiceReply", "TopicKind",
    "UplinkMessage", "classify", "event_post", "parse_downlink", "parse_uplink", "property_post",
    "property_set", "reply", "rrpc_call", "service_call", "service_reply", "valid_identifier",
]

# Reply codes.  200/400/429/460/500/6100/6203/6204/6207/6300 are the IoT platform's documented codes for
# devices ("Error codes received by devices"); 6106 and 6321 follow the platform's thing-model codes;
# 501 and 504 are iotvideo's own (a device that does not implement a service; a call that timed out).
CODE_OK: Final = 200
CODE_REQUEST_ERROR: Final = 400
CODE_TOO_MANY_REQUESTS: Final = 429
CODE_PARAM_ERROR: Final = 460
CODE_SYSTEM_ERROR: Final = 500
CODE_NOT_SUPPORTED: Final = 501
CODE_TIMEOUT: Final = 504
CODE_DEVICE_NOT_FOUND: Final = 6100
CODE_TOO_MANY_PROPERTIES: Final = 6106
CODE_TOPIC_ERROR: Final = 6203
CODE_DEVICE_DISABLED: Final = 6204
CODE_NOT_JSON: Final = 6207
CODE_METHOD_MISSING: Final = 6300
CODE_IDENTIFIER_NOT_DEFINED: Final = 6321

REPLY_MESSAGES: Final[dict[int, str]] = {
    CODE_OK: "success",
    CODE_REQUEST_ERROR: "request error",
    CODE_TOO_MANY_REQUESTS: "too many requests",
    CODE_PARAM_ERROR: "request parameter error",
    CODE_SYSTEM_ERROR: "system error",
    CODE_NOT_SUPPORTED: "service not supported",
    CODE_TIMEOUT: "timed out",
    CODE_DEVICE_NOT_FOUND: "device not found",
    CODE_TOO_MANY_PROPERTIES: "too many properties in one post",
    CODE_TOPIC_ERROR: "topic error",
    CODE_DEVICE_DISABLED: "device is disabled",
    CODE_NOT_JSON: "payload is not a JSON object",
    CODE_METHOD_MISSING: "method is missing or wrong",
    CODE_IDENTIFIER_NOT_DEFINED: "identifier is not defined in the thing model",
}

DEFAULT_MAX_PAYLOAD: Final = 64 * 1024
MAX_DEPTH: Final = 16
MAX_PROPERTIES: Final = 200
MAX_ID_LENGTH: Final = 64
_IDENT = re.compile(r"[A-Za-z0-9_]{1,50}")
_RRPC_ID = re.compile(r"[A-Za-z0-9_\-.]{1,64}")
_CODE_TEXT = re.compile(r"[0-9]{1,9}")
VERSION: Final = "1.0"


class AlinkError(Exception):
    """A payload the cloud refuses; ``code`` goes into the ``_reply`` (when an ``id`` could be read)."""

    def __init__(self, code: int, message: str, msg_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.msg_id = msg_id


def valid_identifier(identifier: str) -> bool:
    """A thing-model identifier: 1..50 ASCII letters, digits and ``_``."""
    return isinstance(identifier, str) and _IDENT.fullmatch(identifier) is not None


# --- topic kinds (uplink) ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PropertyPost:
    """``/sys/{pk}/{dn}/thing/event/property/post``."""


@dataclass(frozen=True, slots=True)
class EventPost:
    """``/sys/{pk}/{dn}/thing/event/{identifier}/post``."""
    identifier: str


@dataclass(frozen=True, slots=True)
class ServiceReply:
    """``/sys/{pk}/{dn}/thing/service/{identifier}_reply``."""
    identifier: str


@dataclass(frozen=True, slots=True)
class RrpcReply:
    """``/ext/rrpc/{message_id}/sys/{pk}/{dn}/thing/service/{identifier}`` (reply on the request topic)."""
    message_id: str
    identifier: str


@dataclass(frozen=True, slots=True)
class PropertySetReply:
    """``/sys/{pk}/{dn}/thing/service/property/set_reply``."""


@dataclass(frozen=True, slots=True)
class DeviceInfoUpdate:
    """``/sys/{pk}/{dn}/thing/deviceinfo/update`` (tags such as the SDK version)."""


@dataclass(frozen=True, slots=True)
class OtaInform:
    """``/ota/device/inform/{pk}/{dn}``: the device reports its firmware version."""


@dataclass(frozen=True, slots=True)
class Other:
    """Anything else (another device's topic, a custom topic, an unknown system topic)."""
    topic: str


TopicKind: TypeAlias = (PropertyPost | EventPost | ServiceReply | RrpcReply | PropertySetReply
                        | DeviceInfoUpdate | OtaInform | Other)


def classify(pk: str, dn: str, topic: str) -> TopicKind:
    """What an uplink PUBLISH from device ``pk``/``dn`` on ``topic`` is."""
    if topic == f"/ota/device/inform/{pk}/{dn}":
        return OtaInform()
    prefix = f"/sys/{pk}/{dn}/"
    if topic.startswith("/ext/rrpc/"):
        rrpc_id, sep, rest = topic[len("/ext/rrpc/"):].partition("/")
        if sep and _RRPC_ID.fullmatch(rrpc_id) and ("/" + rest).startswith(prefix):
            tail = ("/" + rest)[len(prefix):]
            if tail.startswith("thing/service/"):
                ident = tail[len("thing/service/"):]
                if valid_identifier(ident):
                    return RrpcReply(rrpc_id, ident)
        return Other(topic)
    if not topic.startswith(prefix):
        return Other(topic)
    tail = topic[len(prefix):]
    if tail == "thing/event/property/post":
        return PropertyPost()
    if tail == "thing/service/property/set_reply":
        return PropertySetReply()
    if tail == "thing/deviceinfo/update":
        return DeviceInfoUpdate()
    parts = tail.split("/")
    if len(parts) == 4 and parts[:2] == ["thing", "event"] and parts[3] == "post":
        if valid_identifier(parts[2]) and parts[2] != "property":
            return EventPost(parts[2])
    if len(parts) == 3 and parts[:2] == ["thing", "service"] and parts[2].endswith("_reply"):
        ident = parts[2][: -len("_reply")]
        if valid_identifier(ident):
            return ServiceReply(ident)
    return Other(topic)


# --- uplink messages --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PropertyPostMsg:
    """A property post: ``params`` maps property identifiers to values."""
    id: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class EventPostMsg:
    """An event post: ``value`` holds the event's output parameters; ``time`` is epoch ms if given."""
    id: str
    identifier: str
    value: dict[str, Any]
    time: int | None = None


@dataclass(frozen=True, slots=True)
class ReplyMsg:
    """A device's reply to a service call, RRPC call or property set.

    ``identifier`` is None for a property-set reply; ``rrpc_id`` is set for an RRPC reply.
    """
    id: str
    code: int
    data: Any
    message: str | None = None
    identifier: str | None = None
    rrpc_id: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceInfoUpdateMsg:
    """Device tags: ``attrs`` maps ``attrKey`` to ``attrValue`` (as text)."""
    id: str
    attrs: dict[str, str]


@dataclass(frozen=True, slots=True)
class OtaInformMsg:
    """Firmware version report; ``module`` is None for the default module."""
    id: str
    version: str
    module: str | None = None


UplinkMessage: TypeAlias = PropertyPostMsg | EventPostMsg | ReplyMsg | DeviceInfoUpdateMsg | OtaInformMsg


def _depth_ok(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > limit:
                return False
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            if depth > limit:
                return False
            stack.extend((v, depth + 1) for v in item)
    return True


def _load(payload: bytes | bytearray | memoryview, max_size: int) -> dict[str, Any]:
    if len(payload) > max_size:
        raise AlinkError(CODE_PARAM_ERROR, f"payload larger than {max_size} bytes")
    try:
        body = orjson.loads(bytes(payload))
    except orjson.JSONDecodeError as exc:
        raise AlinkError(CODE_NOT_JSON, f"payload is not valid UTF-8 JSON: {str(exc)[:80]}") from None
    if not isinstance(body, dict):
        raise AlinkError(CODE_NOT_JSON, "payload is not a JSON object")
    if not _depth_ok(body, MAX_DEPTH):
        raise AlinkError(CODE_PARAM_ERROR, f"payload nested deeper than {MAX_DEPTH} levels")
    return body


def _msg_id(body: dict[str, Any]) -> str:
    raw = body.get("id")
    if isinstance(raw, bool) or raw is None:
        raise AlinkError(CODE_PARAM_ERROR, "id is missing")
    if isinstance(raw, int):
        if not 0 <= raw < 2**63:
            raise AlinkError(CODE_PARAM_ERROR, "id out of range")
        return str(raw)
    if isinstance(raw, str) and 0 < len(raw) <= MAX_ID_LENGTH and raw.isprintable():
        return raw
    raise AlinkError(CODE_PARAM_ERROR, f"id must be a string of 1..{MAX_ID_LENGTH} printable characters")


def _method(body: dict[str, Any], expected: str, msg_id: str) -> None:
    method = body.get("method")
    if method is not None and method != expected:
        raise AlinkError(CODE_METHOD_MISSING, f"method must be {expected!r}", msg_id)


def _params_obj(body: dict[str, Any], msg_id: str) -> dict[str, Any]:
    params = body.get("params")
    if not isinstance(params, dict):
        raise AlinkError(CODE_PARAM_ERROR, "params must be an object", msg_id)
    return params


def _reply_fields(body: dict[str, Any], msg_id: str) -> tuple[int, Any, str | None]:
    code = body.get("code")
    if isinstance(code, str) and _CODE_TEXT.fullmatch(code):
        code = int(code)
    if isinstance(code, bool) or not isinstance(code, int) or not -2**31 <= code < 2**31:
        raise AlinkError(CODE_PARAM_ERROR, "code must be an integer", msg_id)
    message = body.get("message")
    if message is not None and not isinstance(message, str):
        raise AlinkError(CODE_PARAM_ERROR, "message must be a string", msg_id)
    return code, body.get("data", {}), message


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def parse_uplink(kind: TopicKind, payload: bytes | bytearray | memoryview, *,
                 max_size: int = DEFAULT_MAX_PAYLOAD) -> UplinkMessage:
    """Decode an uplink payload of the given kind; raises :class:`AlinkError` and nothing else."""
    body = _load(payload, max_size)
    msg_id = _msg_id(body)
    if isinstance(kind, PropertyPost):
        _method(body, "thing.event.property.post", msg_id)
        params = _params_obj(body, msg_id)
        if len(params) > MAX_PROPERTIES:
            raise AlinkError(CODE_TOO_MANY_PROPERTIES, f"more than {MAX_PROPERTIES} properties", msg_id)
        return PropertyPostMsg(msg_id, params)
    if isinstance(kind, EventPost):
        _method(body, f"thing.event.{kind.identifier}.post", msg_id)
        params = _params_obj(body, msg_id)
        value = params.get("value", {})
        if not isinstance(value, dict):
            raise AlinkError(CODE_PARAM_ERROR, "params.value must be an object", msg_id)
        t = params.get("time")
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < 2**63):
            raise AlinkError(CODE_PARAM_ERROR, "params.time must be epoch milliseconds", msg_id)
        return EventPostMsg(msg_id, kind.identifier, value, t)
    if isinstance(kind, (ServiceReply, RrpcReply, PropertySetReply)):
        code, data, message = _reply_fields(body, msg_id)
        ident = None if isinstance(kind, PropertySetReply) else kind.identifier
        rrpc_id = kind.message_id if isinstance(kind, RrpcReply) else None
        return ReplyMsg(msg_id, code, data, message, ident, rrpc_id)
    if isinstance(kind, DeviceInfoUpdate):
        _method(body, "thing.deviceinfo.update", msg_id)
        items = body.get("params")
        if not isinstance(items, list) or len(items) > MAX_PROPERTIES:
            raise AlinkError(CODE_PARAM_ERROR, "params must be a list of {attrKey, attrValue}", msg_id)
        attrs: dict[str, str] = {}
        for item in items:
            key = item.get("attrKey") if isinstance(item, dict) else None
            text = _text(item.get("attrValue")) if isinstance(item, dict) else None
            if not isinstance(key, str) or not key or text is None:
                raise AlinkError(CODE_PARAM_ERROR, "params must be a list of {attrKey, attrValue}", msg_id)
            attrs[key] = text
        return DeviceInfoUpdateMsg(msg_id, attrs)
    if isinstance(kind, OtaInform):
        params = _params_obj(body, msg_id)
        version, module = params.get("version"), params.get("module")
        if not isinstance(version, str) or not 0 < len(version) <= 64:
            raise AlinkError(CODE_PARAM_ERROR, "params.version must be a string of 1..64 characters", msg_id)
        if module is not None and not isinstance(module, str):
            raise AlinkError(CODE_PARAM_ERROR, "params.module must be a string", msg_id)
        return OtaInformMsg(msg_id, version, module or None)
    raise AlinkError(CODE_TOPIC_ERROR, "not an Alink uplink topic", msg_id)


# --- downlink messages (what a device receives) -----------------------------------------------------

@dataclass(frozen=True, slots=True)
class ServiceCall:
    """A service call; ``rrpc_id`` is set when it came as a synchronous RRPC request."""
    id: str
    identifier: str
    params: dict[str, Any]
    rrpc_id: str | None = None


@dataclass(frozen=True, slots=True)
class PropertySet:
    """A property set: ``params`` maps writable property identifiers to new values."""
    id: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AlinkReply:
    """The cloud's acknowledgement of a device post; ``topic`` is the ``…_reply`` topic it came on."""
    topic: str
    id: str
    code: int
    data: Any
    message: str | None


def parse_downlink(pk: str, dn: str, topic: str, payload: bytes | bytearray | memoryview, *,
                   max_size: int = DEFAULT_MAX_PAYLOAD) -> ServiceCall | PropertySet | AlinkReply | None:
    """Decode what the cloud sent device ``pk``/``dn``; None for topics this codec does not handle."""
    prefix = f"/sys/{pk}/{dn}/"
    rrpc_id: str | None = None
    if topic.startswith("/ext/rrpc/"):
        rid, sep, rest = topic[len("/ext/rrpc/"):].partition("/")
        if not sep or not ("/" + rest).startswith(prefix):
            return None
        rrpc_id, topic = rid, "/" + rest
    if not topic.startswith(prefix):
        return None
    tail = topic[len(prefix):]
    if tail == "thing/service/property/set" and rrpc_id is None:
        body = _load(payload, max_size)
        msg_id = _msg_id(body)
        return PropertySet(msg_id, _params_obj(body, msg_id))
    if tail.startswith("thing/service/") and valid_identifier(ident := tail[len("thing/service/"):]):
        if ident.endswith("_reply"):
            return None
        body = _load(payload, max_size)
        msg_id = _msg_id(body)
        return ServiceCall(msg_id, ident, _params_obj(body, msg_id), rrpc_id)
    if tail.endswith("_reply") and rrpc_id is None:
        body = _load(payload, max_size)
        msg_id = _msg_id(body)
        code, data, message = _reply_fields(body, msg_id)
        return AlinkReply(topic, msg_id, code, data, message)
    return None


# --- builders ---------------------------------------------------------------------------------------

def _dump(obj: dict[str, Any]) -> bytes:
    """Compact JSON; ValueError for what JSON cannot carry here (non-str keys, ints beyond 64 bits)."""
    try:
        return orjson.dumps(obj)
    except TypeError as exc:
        raise ValueError(f"not JSON-serialisable: {exc}") from None


def _check_ident(identifier: str) -> None:
    if not valid_identifier(identifier):
        raise ValueError(f"invalid thing-model identifier {identifier!r}")


def service_call(pk: str, dn: str, msg_id: str | int, identifier: str,
                 params: dict[str, Any]) -> tuple[str, bytes]:
    """Cloud -> device async call on ``/sys/{pk}/{dn}/thing/service/{identifier}``."""
    _check_ident(identifier)
    body = {"id": str(msg_id), "version": VERSION, "params": params, "method": f"thing.service.{identifier}"}
    return f"/sys/{pk}/{dn}/thing/service/{identifier}", _dump(body)


def rrpc_call(pk: str, dn: str, rrpc_id: str | int, identifier: str, params: dict[str, Any],
              msg_id: str | int | None = None) -> tuple[str, bytes]:
    """Cloud -> device synchronous call on ``/ext/rrpc/{rrpc_id}/sys/{pk}/{dn}/thing/service/{identifier}``.

    The device answers on the same topic; the payload ``id`` defaults to ``rrpc_id``.
    """
    _check_ident(identifier)
    if not _RRPC_ID.fullmatch(str(rrpc_id)):
        raise ValueError(f"invalid RRPC message id {rrpc_id!r}")
    body = {"id": str(rrpc_id if msg_id is None else msg_id), "version": VERSION, "params": params,
            "method": f"thing.service.{identifier}"}
    return f"/ext/rrpc/{rrpc_id}/sys/{pk}/{dn}/thing/service/{identifier}", _dump(body)


def property_set(pk: str, dn: str, msg_id: str | int, params: dict[str, Any]) -> tuple[str, bytes]:
    """Cloud -> device property set on ``/sys/{pk}/{dn}/thing/service/property/set``."""
    body = {"id": str(msg_id), "version": VERSION, "params": params, "method": "thing.service.property.set"}
    return f"/sys/{pk}/{dn}/thing/service/property/set", _dump(body)


def reply(topic: str, msg_id: str | int, code: int = CODE_OK, data: Any = None,
          message: str | None = None) -> tuple[str, bytes]:
    """Acknowledge a request received on ``topic``: ``{id, code, data, message, version}`` on ``topic_reply``.

    ``data`` defaults to ``{}``; ``message`` to the code's standard text.  An RRPC request topic
    (``/ext/rrpc/…``) is answered on the same topic.
    """
    body = {"id": str(msg_id), "code": code, "data": {} if data is None else data,
            "message": message if message is not None else REPLY_MESSAGES.get(code, "error"),
            "version": VERSION}
    out = topic if topic.startswith("/ext/rrpc/") else topic + "_reply"
    return out, _dump(body)


def service_reply(pk: str, dn: str, msg_id: str | int, identifier: str, code: int = CODE_OK,
                  data: Any = None, message: str | None = None,
                  rrpc_id: str | None = None) -> tuple[str, bytes]:
    """Device -> cloud answer to a service call (on the RRPC topic when ``rrpc_id`` is given)."""
    _check_ident(identifier)
    request = f"/sys/{pk}/{dn}/thing/service/{identifier}"
    if rrpc_id is not None:
        request = f"/ext/rrpc/{rrpc_id}{request}"
    return reply(request, msg_id, code, data, message)


def property_post(pk: str, dn: str, msg_id: str | int, params: dict[str, Any]) -> tuple[str, bytes]:
    """Device -> cloud property post."""
    body = {"id": str(msg_id), "version": VERSION, "params": params, "method": "thing.event.property.post"}
    return f"/sys/{pk}/{dn}/thing/event/property/post", _dump(body)


def event_post(pk: str, dn: str, msg_id: str | int, identifier: str, value: dict[str, Any],
               time_ms: int | None = None) -> tuple[str, bytes]:
    """Device -> cloud event post ``params: {value, time?}``."""
    _check_ident(identifier)
    params: dict[str, Any] = {"value": value}
    if time_ms is not None:
        params["time"] = time_ms
    body = {"id": str(msg_id), "version": VERSION, "params": params, "method": f"thing.event.{identifier}.post"}
    return f"/sys/{pk}/{dn}/thing/event/{identifier}/post", _dump(body)
