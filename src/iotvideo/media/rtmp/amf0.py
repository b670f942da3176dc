"""AMF0, the value format of RTMP commands and FLV metadata: ``encode(*values)`` and ``decode(data)``.

Python mapping: number ⇄ ``float`` (``int`` encodes as a number), boolean ⇄ ``bool``, string and
long string ⇄ ``str`` (a string over 65535 UTF-8 bytes encodes as a long string), object ⇄ ``dict``,
ECMA array ⇄ ``EcmaArray`` (a ``dict``), strict array ⇄ ``list`` (a ``tuple`` encodes too),
null ⇄ ``None``, undefined ⇄ ``UNDEFINED``, date ⇄ ``AmfDate``. Strings that are not valid UTF-8
decode with ``surrogateescape`` and encode back to the same bytes. Nesting is bounded by
``max_depth``; every malformed input raises ``AmfError``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "MAX_DEPTH",
    "UNDEFINED",
    "AmfDate",
    "AmfError",
    "EcmaArray",
    "Undefined",
    "decode",
    "decode_value",
    "encode",
]

MAX_DEPTH: Final = 32

NUMBER: Final = 0x00
BOOLEAN: Final = 0x01
STRING: Final = 0x02
OBJECT: Final = 0x03
NULL: Final = 0x05
UNDEFINED_MARKER: Final = 0x06
ECMA_ARRAY: Final = 0x08
OBJECT_END: Final = 0x09
STRICT_ARRAY: Final = 0x0A
DATE: Final = 0x0B
LONG_STRING: Final = 0x0C

_DOUBLE: Final = struct.Struct(">d")
_DATE: Final = struct.Struct(">dh")
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_END: Final = b"\x00\x00\x09"


class AmfError(ValueError):
    """Malformed AMF0 bytes, or a Python value AMF0 cannot carry."""


class Undefined:
    """The AMF0 ``undefined`` value (distinct from ``null``/``None``); use the ``UNDEFINED`` singleton."""

    __slots__ = ()
    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False


UNDEFINED: Final = Undefined()


class EcmaArray(dict[str, Any]):
    """An AMF0 ECMA (associative) array; a ``dict`` that remembers to encode with the ECMA marker."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class AmfDate:
    """An AMF0 date: milliseconds since the Unix epoch (UTC) and a time-zone field (minutes, usually 0)."""

    milliseconds: float
    timezone: int = 0


# --- decoding -------------------------------------------------------------------------------------


def decode(data: bytes | bytearray | memoryview, *, max_depth: int = MAX_DEPTH) -> list[Any]:
    """Decode every value in ``data`` (a command or data message body)."""
    with memoryview(data) as raw, raw.cast("B") as mv:
        end = len(mv)
        pos = 0
        out: list[Any] = []
        while pos < end:
            value, pos = _value(mv, pos, end, 0, max_depth)
            out.append(value)
        return out


def decode_value(
    data: bytes | bytearray | memoryview, pos: int = 0, *, max_depth: int = MAX_DEPTH
) -> tuple[Any, int]:
    """Decode one value at ``pos``; return it and the offset just after it."""
    with memoryview(data) as raw, raw.cast("B") as mv:
        return _value(mv, pos, len(mv), 0, max_depth)


def _need(pos: int, size: int, end: int, what: str) -> None:
    if pos + size > end:
        raise AmfError(f"truncated {what}")


def _text(mv: memoryview, pos: int, size: int, end: int, what: str) -> tuple[str, int]:
    j = pos + size
    if j > end:
        raise AmfError(f"truncated {what}")
    return str(mv[pos:j], "utf-8", "surrogateescape"), j


def _value(mv: memoryview, pos: int, end: int, depth: int, max_depth: int) -> tuple[Any, int]:
    if pos >= end:
        raise AmfError("truncated: value marker expected")
    marker = mv[pos]
    pos += 1
    if marker == NUMBER:
        _need(pos, 8, end, "number")
        return _DOUBLE.unpack_from(mv, pos)[0], pos + 8
    if marker == STRING:
        _need(pos, 2, end, "string length")
        return _text(mv, pos + 2, (mv[pos] << 8) | mv[pos + 1], end, "string")
    if marker == OBJECT or marker == ECMA_ARRAY:
        if depth >= max_depth:
            raise AmfError(f"nesting deeper than {max_depth}")
        if marker == OBJECT:
            obj: dict[str, Any] = {}
        else:
            _need(pos, 4, end, "ECMA array count")
            pos += 4  # the count is advisory; the end marker ends the array
            obj = EcmaArray()
        return obj, _properties(mv, pos, end, depth + 1, max_depth, obj, marker == ECMA_ARRAY)
    if marker == BOOLEAN:
        _need(pos, 1, end, "boolean")
        return mv[pos] != 0, pos + 1
    if marker == NULL:
        return None, pos
    if marker == UNDEFINED_MARKER:
        return UNDEFINED, pos
    if marker == STRICT_ARRAY:
        if depth >= max_depth:
            raise AmfError(f"nesting deeper than {max_depth}")
        _need(pos, 4, end, "strict array count")
        count = _U32.unpack_from(mv, pos)[0]
        pos += 4
        if count > end - pos:  # every element takes at least its marker byte
            raise AmfError(f"strict array of {count} elements in {end - pos} bytes")
        items: list[Any] = []
        for _ in range(count):
            item, pos = _value(mv, pos, end, depth + 1, max_depth)
            items.append(item)
        return items, pos
    if marker == DATE:
        _need(pos, 10, end, "date")
        ms, tz = _DATE.unpack_from(mv, pos)
        return AmfDate(ms, tz), pos + 10
    if marker == LONG_STRING:
        _need(pos, 4, end, "long string length")
        return _text(mv, pos + 4, _U32.unpack_from(mv, pos)[0], end, "long string")
    if marker == OBJECT_END:
        raise AmfError("object-end marker outside an object")
    raise AmfError(f"unsupported AMF0 marker {marker:#04x}")


def _properties(
    mv: memoryview, pos: int, end: int, depth: int, max_depth: int, out: dict[str, Any], ecma: bool
) -> int:
    while True:
        if pos + 2 > end:
            if ecma and pos == end:  # some writers end an ECMA array without the end marker
                return pos
            raise AmfError("truncated object: no end marker")
        size = (mv[pos] << 8) | mv[pos + 1]
        pos += 2
        if size == 0 and pos < end and mv[pos] == OBJECT_END:
            return pos + 1
        key, pos = _text(mv, pos, size, end, "property name")
        out[key], pos = _value(mv, pos, end, depth, max_depth)


# --- encoding -------------------------------------------------------------------------------------


def encode(*values: Any, max_depth: int = MAX_DEPTH) -> bytes:
    """Encode ``values`` one after the other (a command: name, transaction id, object, args…)."""
    out = bytearray()
    for value in values:
        _encode(out, value, 0, max_depth)
    return bytes(out)


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise AmfError(f"string not encodable as UTF-8: {exc.reason}") from None


def _encode(out: bytearray, value: Any, depth: int, max_depth: int) -> None:
    if value is None:
        out.append(NULL)
    elif value is True or value is False:
        out += b"\x01\x01" if value else b"\x01\x00"
    elif isinstance(value, (int, float)):
        try:
            out += b"\x00" + _DOUBLE.pack(value)
        except (OverflowError, struct.error):
            raise AmfError(f"number {value!r} does not fit a double") from None
    elif isinstance(value, str):
        raw = _utf8(value)
        if len(raw) <= 0xFFFF:
            out += b"\x02" + _U16.pack(len(raw)) + raw
        elif len(raw) <= 0xFFFFFFFF:
            out += b"\x0c" + _U32.pack(len(raw)) + raw
        else:
            raise AmfError("string longer than 4 GiB")
    elif isinstance(value, dict):
        if depth >= max_depth:
            raise AmfError(f"nesting deeper than {max_depth}")
        if isinstance(value, EcmaArray):
            out.append(ECMA_ARRAY)
            out += _U32.pack(len(value))
        else:
            out.append(OBJECT)
        for key, item in value.items():
            if not isinstance(key, str):
                raise AmfError(f"property name {key!r} is not a string")
            raw = _utf8(key)
            if len(raw) > 0xFFFF:
                raise AmfError("property name longer than 65535 bytes")
            out += _U16.pack(len(raw)) + raw
            _encode(out, item, depth + 1, max_depth)
        out += _END
    elif isinstance(value, (list, tuple)):
        if depth >= max_depth:
            raise AmfError(f"nesting deeper than {max_depth}")
        out.append(STRICT_ARRAY)
        out += _U32.pack(len(value))
        for item in value:
            _encode(out, item, depth + 1, max_depth)
    elif value is UNDEFINED:
        out.append(UNDEFINED_MARKER)
    elif isinstance(value, AmfDate):
        try:
            out += b"\x0b" + _DATE.pack(value.milliseconds, value.timezone)
        except struct.error:
            raise AmfError(f"invalid date {value!r}") from None
    else:
        raise AmfError(f"cannot encode {type(value).__name__} as AMF0")
