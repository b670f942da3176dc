"""The video camera thing model (IoT-platform TSL JSON) served for every camera product, and its validators.

``THING_MODEL`` follows the platform's TSL format (``schema``, ``profile``, ``properties``, ``events``,
``services``; each item has ``identifier``, ``name``, ``dataType: {type, specs}``), including the
standard ``post`` event and ``set``/``get`` services that the official device SDK reads in
``thing_setup``.  Validators return a list of :class:`TslError` (empty: valid).  Which inputs and
event outputs are mandatory is not expressible in TSL; it is kept in :data:`REQUIRED_INPUTS` and
:data:`REQUIRED_OUTPUTS` and documented in ``docs/device-protocol.md``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "EVENTS", "PROPERTIES", "REQUIRED_INPUTS", "REQUIRED_OUTPUTS", "SERVICES", "THING_MODEL",
    "TslError", "call_type", "thing_model", "tsl_json", "validate_event", "validate_properties",
    "validate_service_input", "validate_value",
]

CODE_PARAM_ERROR: Final = 460              # same values as alink.CODE_PARAM_ERROR / CODE_IDENTIFIER_NOT_DEFINED
CODE_IDENTIFIER_NOT_DEFINED: Final = 6321
INT32_MAX: Final = 2**31 - 1


@dataclass(frozen=True, slots=True)
class TslError:
    """One validation failure: Alink reply ``code``, the ``path`` of the bad value, and a message."""

    code: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


# --- data types -------------------------------------------------------------------------------------

def _int(lo: int, hi: int, unit: str = "", unit_name: str = "") -> dict[str, Any]:
    specs = {"min": str(lo), "max": str(hi), "step": "1"}
    if unit:
        specs |= {"unit": unit, "unitName": unit_name or unit}
    return {"type": "int", "specs": specs}


def _double(lo: float, hi: float, unit: str, unit_name: str) -> dict[str, Any]:
    return {"type": "double", "specs": {"min": str(lo), "max": str(hi), "step": "0.01",
                                        "unit": unit, "unitName": unit_name}}


def _text(length: int) -> dict[str, Any]:
    return {"type": "text", "specs": {"length": str(length)}}


def _bool(off: str = "off", on: str = "on") -> dict[str, Any]:
    return {"type": "bool", "specs": {"0": off, "1": on}}


def _enum(values: dict[int, str]) -> dict[str, Any]:
    return {"type": "enum", "specs": {str(k): v for k, v in values.items()}}


def _struct(*members: dict[str, Any]) -> dict[str, Any]:
    return {"type": "struct", "specs": list(members)}


def _array(size: int, item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "specs": {"size": str(size), "item": item}}


def _param(identifier: str, name: str, data_type: dict[str, Any]) -> dict[str, Any]:
    return {"identifier": identifier, "name": name, "dataType": data_type}


_STORAGE_STATUS = {0: "no storage", 1: "normal", 2: "not formatted", 3: "formatting", 4: "full", 5: "error"}
_QUALITY = {0: "smooth", 1: "standard definition", 2: "high definition"}
_STREAM_TYPE = {0: "main stream", 1: "sub stream"}
_ENCRYPT_TYPE = {0: "none", 1: "AES-128-CBC"}
_RECORD_TYPE = {0: "scheduled", 1: "alarm", 2: "manual"}
_ALARM_TYPE = {1: "motion", 2: "sound", 3: "human", 4: "face", 5: "crying", 6: "fire", 7: "other"}
_EPOCH = _int(0, INT32_MAX, "s", "second")
_URL = _text(2048)
_KEY = _text(64)

# --- properties -------------------------------------------------------------------------------------

def _prop(identifier: str, name: str, access: str, data_type: dict[str, Any]) -> dict[str, Any]:
    return {"identifier": identifier, "name": name, "accessMode": access, "required": False,
            "dataType": data_type}


_PROPERTIES: list[dict[str, Any]] = [
    _prop("FirmwareVersion", "firmware version", "r", _text(64)),
    _prop("StorageStatus", "storage (SD card) status", "r", _enum(_STORAGE_STATUS)),
    _prop("StorageTotalCapacity", "storage total capacity", "r", _double(0, 100_000_000, "MB", "megabyte")),
    _prop("StorageRemainCapacity", "storage free capacity", "r", _double(0, 100_000_000, "MB", "megabyte")),
    _prop("StreamVideoQuality", "main stream video quality", "rw", _enum(_QUALITY)),
    _prop("SubStreamVideoQuality", "sub stream video quality", "rw", _enum(_QUALITY)),
    _prop("AlarmSwitch", "alarm detection switch", "rw", _bool()),
    _prop("MotionDetectSensitivity", "motion detection sensitivity", "rw",
          _enum({0: "off", 1: "lowest", 2: "low", 3: "medium", 4: "high", 5: "highest"})),
    _prop("AlarmFrequencyLevel", "alarm frequency level", "rw", _enum({0: "low", 1: "medium", 2: "high"})),
    _prop("DayNightMode", "day/night mode", "rw", _enum({0: "day", 1: "night", 2: "auto"})),
    _prop("ImageFlipState", "image flip", "rw", _enum({0: "normal", 1: "flipped"})),
    _prop("StatusLight", "status light", "rw", _bool()),
    _prop("EncryptSwitch", "stream encryption switch", "rw", _bool()),
]

# --- events -----------------------------------------------------------------------------------------

REQUIRED_OUTPUTS: dict[str, frozenset[str]] = {}
"""Event identifier -> output parameters a device must send."""


def _event(identifier: str, name: str, kind: str, desc: str,
           outputs: list[tuple[dict[str, Any], bool]]) -> dict[str, Any]:
    REQUIRED_OUTPUTS[identifier] = frozenset(p["identifier"] for p, req in outputs if req)
    return {"identifier": identifier, "name": name, "type": kind, "required": False, "desc": desc,
            "method": f"thing.event.{identifier}.post", "outputData": [p for p, _ in outputs]}


_EVENTS: list[dict[str, Any]] = [
    {"identifier": "post", "name": "post", "type": "info", "required": True, "desc": "property post",
     "method": "thing.event.property.post",
     "outputData": [_param(p["identifier"], p["name"], p["dataType"]) for p in _PROPERTIES]},
    _event("AlarmEvent", "alarm", "alert", "An alarm was detected (motion, sound, ...).", [
        (_param("AlarmType", "alarm type", _enum(_ALARM_TYPE)), True),
        (_param("AlarmPicId", "alarm picture id", _text(64)), False),
        (_param("Data", "extra data", _text(2048)), False),
        (_param("AlarmTime", "alarm time (epoch seconds)", _EPOCH), False),
    ]),
    _event("StorageError", "storage error", "error", "The storage (SD card) failed or changed state.", [
        (_param("StorageStatus", "storage status", _enum(_STORAGE_STATUS)), True),
        (_param("ErrorMessage", "error message", _text(256)), False),
    ]),
]

# --- services ---------------------------------------------------------------------------------------

REQUIRED_INPUTS: dict[str, frozenset[str]] = {}
"""Service identifier -> input parameters a caller must give."""


def _service(identifier: str, name: str, desc: str, inputs: list[tuple[dict[str, Any], bool]],
             outputs: list[dict[str, Any]], call: str = "async") -> dict[str, Any]:
    REQUIRED_INPUTS[identifier] = frozenset(p["identifier"] for p, req in inputs if req)
    return {"identifier": identifier, "name": name, "required": False, "callType": call, "desc": desc,
            "method": f"thing.service.{identifier}", "inputData": [p for p, _ in inputs],
            "outputData": outputs}


def _crypto() -> list[tuple[dict[str, Any], bool]]:
    return [(_param("EncryptType", "encryption type", _enum(_ENCRYPT_TYPE)), False),
            (_param("Key", "AES-128 key (base64)", _KEY), False),
            (_param("Iv", "AES-128 IV (base64)", _KEY), False)]


_STREAM = _param("StreamType", "stream type", _enum(_STREAM_TYPE))
_PRE_RECORD = _param("PreRecordSeconds", "pre-record seconds", _int(0, 60, "s", "second"))
_RECORD_ITEM = _struct(
    _param("FileName", "file name", _text(128)),
    _param("BeginTime", "begin time (epoch seconds)", _EPOCH),
    _param("EndTime", "end time (epoch seconds)", _EPOCH),
    _param("Size", "size in bytes", _int(0, INT32_MAX, "B", "byte")),
    _param("Type", "record type", _enum(_RECORD_TYPE)),
)

_SERVICES: list[dict[str, Any]] = [
    {"identifier": "set", "name": "set", "required": True, "callType": "async", "desc": "property set",
     "method": "thing.service.property.set",
     "inputData": [_param(p["identifier"], p["name"], p["dataType"]) for p in _PROPERTIES
                   if p["accessMode"] == "rw"], "outputData": []},
    {"identifier": "get", "name": "get", "required": True, "callType": "async", "desc": "property get",
     "method": "thing.service.property.get", "inputData": [p["identifier"] for p in _PROPERTIES],
     "outputData": [_param(p["identifier"], p["name"], p["dataType"]) for p in _PROPERTIES]},
    _service("StartPushStreaming", "start live push", "Push the stream to PushUrl over RTMP.", [
        (_param("PushUrl", "RTMP push URL", _URL), True), (_STREAM, True), *_crypto(), (_PRE_RECORD, False),
        (_param("ForceIFrame", "start with a key frame", _bool("no", "yes")), False),
    ], [_param("Code", "result code", _int(-INT32_MAX - 1, INT32_MAX))]),
    _service("StopPushStreaming", "stop live push", "Stop pushing the stream (to PushUrl if given).", [
        (_STREAM, True), (_param("PushUrl", "RTMP push URL", _URL), False)], []),
    _service("ForceIFrame", "force key frame", "Encode a key frame now on the given stream.", [
        (_STREAM, True)], []),
    _service("TriggerPicCapture", "capture picture", "Capture a JPEG picture and upload it to UploadUrl.", [
        (_param("UploadUrl", "picture upload URL", _URL), True),
        (_param("CaptureId", "capture id", _text(64)), True),
    ], [_param("PicId", "picture id", _text(64))]),
    _service("StartTriggerRecord", "start triggered recording", "Push a recording of RecordSeconds to PushUrl.", [
        (_param("RecordId", "record id", _text(64)), True), (_STREAM, True), (_PRE_RECORD, False),
        (_param("RecordSeconds", "record seconds", _int(1, 3600, "s", "second")), True),
        (_param("PushUrl", "RTMP push URL", _URL), True),
    ], []),
    _service("StopTriggerRecord", "stop triggered recording", "Stop the triggered recording RecordId.", [
        (_param("RecordId", "record id", _text(64)), True)], []),
    _service("QueryRecordList", "list SD-card recordings", "List local recordings overlapping the range.", [
        (_param("BeginTime", "begin time (epoch seconds)", _EPOCH), True),
        (_param("EndTime", "end time (epoch seconds)", _EPOCH), True),
        (_param("Type", "record type (99: all)", _enum({**_RECORD_TYPE, 99: "all"})), False),
        (_param("QuerySize", "maximum number of records", _int(1, 128)), False),
    ], [_param("RecordList", "recordings", _array(128, _RECORD_ITEM))]),
    _service("QueryMonthRecord", "days with recordings", "Which days of a month have local recordings.", [
        (_param("Month", "month (yyyyMM)", _text(6)), True)],
        [_param("MonthMap", "one 0/1 character per day of the month", _text(31))]),
    _service("StartVod", "play an SD-card file", "Push a local recording file to PushUrl.", [
        (_param("FileName", "file name", _text(128)), True), (_param("PushUrl", "RTMP push URL", _URL), True),
        (_param("SeekTime", "start offset (seconds)", _int(0, 86400, "s", "second")), False), *_crypto(),
    ], []),
    _service("StartVodByTime", "play SD-card time range", "Push local recordings of a time range to PushUrl.", [
        (_param("BeginTime", "begin time (epoch seconds)", _EPOCH), True),
        (_param("EndTime", "end time (epoch seconds)", _EPOCH), True),
        (_param("PushUrl", "RTMP push URL", _URL), True), *_crypto(),
    ], []),
    _service("StopVod", "stop SD-card playback", "Stop local playback (to PushUrl if given).", [
        (_param("PushUrl", "RTMP push URL", _URL), False)], []),
    _service("GetDeviceStatus", "device status", "Answer at once with the device's status (RRPC-capable).", [], [
        _param("FirmwareVersion", "firmware version", _text(64)),
        _param("StorageStatus", "storage status", _enum(_STORAGE_STATUS)),
        _param("StreamsPushing", "streams being pushed", _int(0, 16)),
        _param("UptimeSeconds", "uptime", _int(0, INT32_MAX, "s", "second")),
        _param("ConnectedSince", "connected since (epoch s, 0 if not)", _int(0, INT32_MAX, "s", "second")),
        _param("Source", "video source", _text(256)),
    ], call="sync"),
]

THING_MODEL: Final[dict[str, Any]] = {
    "schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
    "profile": {"version": "1.0", "productKey": ""},
    "properties": _PROPERTIES,
    "events": _EVENTS,
    "services": _SERVICES,
}

PROPERTIES: Final[dict[str, dict[str, Any]]] = {p["identifier"]: p for p in _PROPERTIES}
EVENTS: Final[dict[str, dict[str, Any]]] = {e["identifier"]: e for e in _EVENTS if e["identifier"] != "post"}
SERVICES: Final[dict[str, dict[str, Any]]] = {s["identifier"]: s for s in _SERVICES
                                               if s["identifier"] not in ("set", "get")}


def thing_model(product_key: str = "") -> dict[str, Any]:
    """A deep copy of the thing model with ``profile.productKey`` filled in."""
    model = copy.deepcopy(THING_MODEL)
    model["profile"]["productKey"] = product_key
    return model


def tsl_json(product_key: str = "") -> str:
    """The thing model as TSL JSON text (what ``GetThingModelTsl`` returns as ``TslStr``)."""
    return json.dumps(thing_model(product_key), ensure_ascii=False, separators=(",", ":"))


def call_type(identifier: str) -> str | None:
    """``"sync"`` (may be called over RRPC), ``"async"``, or None for an unknown service."""
    service = SERVICES.get(identifier)
    return None if service is None else service["callType"]


# --- validation -------------------------------------------------------------------------------------

def _err(path: str, message: str) -> list[TslError]:
    return [TslError(CODE_PARAM_ERROR, path, message)]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_value(data_type: dict[str, Any], value: Any, path: str = "") -> list[TslError]:
    """Check one value against a TSL ``dataType`` (type, range, enum values, text length, nesting)."""
    kind, specs = data_type["type"], data_type.get("specs", {})
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return _err(path, f"must be an integer, got {type(value).__name__}")
        lo, hi = int(specs["min"]), int(specs["max"])
        return [] if lo <= value <= hi else _err(path, f"{value} is outside {lo}..{hi}")
    if kind in ("float", "double"):
        if not _number(value) or not math.isfinite(value):
            return _err(path, "must be a finite number")
        lo_f, hi_f = float(specs["min"]), float(specs["max"])
        return [] if lo_f <= value <= hi_f else _err(path, f"{value} is outside {specs['min']}..{specs['max']}")
    if kind == "text":
        if not isinstance(value, str):
            return _err(path, f"must be a string, got {type(value).__name__}")
        try:
            size = len(value.encode())
        except UnicodeEncodeError:
            return _err(path, "is not valid Unicode text")
        limit = int(specs["length"])
        return [] if size <= limit else _err(path, f"is {size} bytes long; at most {limit} allowed")
    if kind == "bool":
        ok = value is True or value is False or (type(value) is int and value in (0, 1))
        return [] if ok else _err(path, "must be 0 or 1")
    if kind == "enum":
        if isinstance(value, bool) or not isinstance(value, int):
            return _err(path, f"must be an integer enum value, got {type(value).__name__}")
        if str(value) not in specs:
            return _err(path, f"{value} is not one of {', '.join(specs)}")
        return []
    if kind == "date":
        ok = (type(value) is int and value >= 0) or (isinstance(value, str) and re.fullmatch(r"[0-9]{1,15}", value))
        return [] if ok else _err(path, "must be epoch milliseconds")
    if kind == "struct":
        if not isinstance(value, dict):
            return _err(path, "must be an object")
        members = {m["identifier"]: m for m in specs}
        errors = [e for k in value if k not in members for e in _err(f"{path}.{k}", "is not a member")]
        for name, member in members.items():
            if name not in value:
                errors += _err(f"{path}.{name}", "is missing")
            else:
                errors += validate_value(member["dataType"], value[name], f"{path}.{name}")
        return errors
    if kind == "array":
        if not isinstance(value, list):
            return _err(path, "must be an array")
        size = int(specs["size"])
        if len(value) > size:
            return _err(path, f"has {len(value)} elements; at most {size} allowed")
        return [e for i, item in enumerate(value) for e in validate_value(specs["item"], item, f"{path}[{i}]")]
    return _err(path, f"has unsupported type {kind!r}")


def _check_params(owner: str, declared: list[dict[str, Any]], required: frozenset[str],
                  values: Any) -> list[TslError]:
    if not isinstance(values, dict):
        return _err(owner, "parameters must be an object")
    by_id = {p["identifier"]: p for p in declared}
    errors: list[TslError] = []
    for key, value in values.items():
        param = by_id.get(key)
        if param is None:
            errors += _err(f"{owner}.{key}", f"{owner} has no parameter {key!r}")
        else:
            errors += validate_value(param["dataType"], value, f"{owner}.{key}")
    errors += [e for key in sorted(required - values.keys()) for e in _err(f"{owner}.{key}", "is required")]
    return errors


def validate_properties(params: Any, *, writable_only: bool = False) -> list[TslError]:
    """Check a property post (or, with ``writable_only``, a property set) against the thing model."""
    if not isinstance(params, dict):
        return _err("", "properties must be an object")
    errors: list[TslError] = []
    for key, value in params.items():
        prop = PROPERTIES.get(key)
        if prop is None:
            errors.append(TslError(CODE_IDENTIFIER_NOT_DEFINED, str(key),
                                   f"property {str(key)[:64]!r} is not defined in the thing model"))
        elif writable_only and prop["accessMode"] != "rw":
            errors += _err(key, f"property {key!r} is read-only")
        else:
            errors += validate_value(prop["dataType"], value, key)
    return errors


def validate_event(identifier: str, value: Any) -> list[TslError]:
    """Check an event post's ``value`` against the event's output parameters."""
    event = EVENTS.get(identifier)
    if event is None:
        return [TslError(CODE_IDENTIFIER_NOT_DEFINED, str(identifier),
                         f"event {str(identifier)[:64]!r} is not defined in the thing model")]
    return _check_params(identifier, event["outputData"], REQUIRED_OUTPUTS[identifier], value)


def _is_aes_128(raw: str) -> bool:
    """Base64 (with padding) of exactly 16 bytes."""
    if len(raw) != 24:
        return False
    try:
        return len(base64.b64decode(raw, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def _semantic(identifier: str, args: dict[str, Any]) -> list[TslError]:
    errors: list[TslError] = []
    if args.get("EncryptType") == 1:
        for name in ("Key", "Iv"):
            raw = args.get(name)
            if raw is None:
                errors += _err(f"{identifier}.{name}", "is required when EncryptType is 1")
            elif isinstance(raw, str) and not _is_aes_128(raw):  # other types: reported by the type check
                errors += _err(f"{identifier}.{name}", "must be base64 of 16 bytes")
    begin, end = args.get("BeginTime"), args.get("EndTime")
    if type(begin) is int and type(end) is int and begin > end:
        errors += _err(f"{identifier}.EndTime", "must not be before BeginTime")
    month = args.get("Month")
    if isinstance(month, str) and not re.fullmatch(r"[0-9]{4}(0[1-9]|1[0-2])", month):
        errors += _err(f"{identifier}.Month", "must be yyyyMM")
    return errors


def validate_service_input(identifier: str, args: Any) -> list[TslError]:
    """Check a service call's input arguments (types, ranges, required inputs, AES key/iv, dates)."""
    if identifier in ("set", "get"):
        return _err(str(identifier), "use SetDeviceProperty / QueryDevicePropertyStatus for properties")
    service = SERVICES.get(identifier)
    if service is None:
        return [TslError(CODE_IDENTIFIER_NOT_DEFINED, str(identifier),
                         f"service {str(identifier)[:64]!r} is not defined in the thing model")]
    errors = _check_params(identifier, service["inputData"], REQUIRED_INPUTS[identifier], args)
    if isinstance(args, dict):
        errors += _semantic(identifier, args)
    return errors
