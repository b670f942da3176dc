"""Typed getters over the flat request parameters (query + form), incl. ``X.N`` / ``X.N.Field`` lists.

Lists arrive as ``Name.1=a&Name.2=b`` (both SDKs; order by N, gaps allowed), as a JSON
array in ``Name`` (seed examples) or inside ``Name.1`` (the seed's ``DeviceList.1=[…]``).
Lists of objects arrive as ``Name.N.Field=v`` (both SDKs; the new SDK's ``query()`` turns
a list of models into exactly that) or as a JSON array of objects in ``Name``.
Every failure is a ``GatewayError``; work is bounded by item and JSON size limits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from iotvideo.errors import invalid_parameter, missing_parameter

MAX_ITEMS = 1000
MAX_JSON_CHARS = 65536

_INDEX = re.compile(r"[1-9][0-9]{0,8}")
_DECIMAL = re.compile(r"-?[0-9]{1,19}")
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})

# The getters are named after the builtins they return, so annotate with these aliases.
Str = str
Int = int
Bool = bool
Object = dict[str, str]
Objects = list[Object]
StrList = list[str]
JsonArray = list[Any]
Slots = dict[int, dict[str | None, str]]


def _scalar(name: Str, value: Any) -> Str:
    """A JSON scalar as the flat encoding would have carried it."""
    if isinstance(value, Str):
        return value
    if isinstance(value, (Bool, Int, float)):
        return json.dumps(value)
    raise invalid_parameter(name, "list items must be strings or numbers")


def _parse_json(text: Str) -> Any:
    """``json.loads`` bounded in size and depth; ``None`` when ``text`` is not JSON."""
    if len(text) > MAX_JSON_CHARS:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _json_array(name: Str, value: Any, max_items: Int) -> JsonArray:
    if not isinstance(value, list):
        raise invalid_parameter(name, f"must be a JSON array of at most {MAX_JSON_CHARS} characters")
    if len(value) > max_items:
        raise invalid_parameter(name, f"more than {max_items} items")
    return value


def _json_object(name: Str, item: Any, fields: tuple[Str, ...]) -> Object:
    if not isinstance(item, dict):
        raise invalid_parameter(name, "items must be JSON objects")
    return {f: _scalar(f"{name}.{f}", item[f]) for f in fields if item.get(f) is not None}


class Params:
    """Read-only view of one request's parameters with typed, validating getters."""

    def __init__(self, raw: Mapping[Str, Str]) -> None:
        self._raw = dict(raw)

    def _value(self, name: Str, required: Bool) -> Str | None:
        value = self._raw.get(name)
        if value:
            return value
        if required:
            raise missing_parameter(name)
        return None

    def has(self, name: Str) -> Bool:
        """True when ``name`` is given non-empty, or in its ``name.N…`` form."""
        prefix = name + "."
        return Bool(self._raw.get(name)) or any(k.startswith(prefix) for k in self._raw)

    def str(
        self, name: Str, *, required: Bool = False, default: Str | None = None,
        max_len: Int | None = None, min_len: Int | None = None,
    ) -> Str | None:
        value = self._value(name, required)
        if value is None:
            return default
        if max_len is not None and len(value) > max_len:
            raise invalid_parameter(name, f"longer than {max_len} characters")
        if min_len is not None and len(value) < min_len:
            raise invalid_parameter(name, f"shorter than {min_len} characters")
        return value

    def int(
        self, name: Str, *, required: Bool = False, default: Int | None = None,
        min: Int | None = None, max: Int | None = None,
    ) -> Int | None:
        value = self._value(name, required)
        if value is None:
            return default
        if not _DECIMAL.fullmatch(value):
            raise invalid_parameter(name, "not a decimal integer")
        number = Int(value)
        if min is not None and number < min:
            raise invalid_parameter(name, f"must be >= {min}")
        if max is not None and number > max:
            raise invalid_parameter(name, f"must be <= {max}")
        return number

    def bool(self, name: Str, *, required: Bool = False, default: Bool | None = None) -> Bool | None:
        value = self._value(name, required)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise invalid_parameter(name, "must be true or false")

    def _indexed(self, name: Str, max_items: Int) -> Slots:
        """``{N: {field or None: value}}`` for every ``name.N`` / ``name.N.field`` key, by N."""
        prefix = name + "."
        slots: Slots = {}
        for key, value in self._raw.items():
            if not key.startswith(prefix):
                continue
            index, dot, field = key[len(prefix):].partition(".")
            if not _INDEX.fullmatch(index):
                raise invalid_parameter(name, f"{name}.N needs N a positive integer, got {index[:16]!r}")
            slots.setdefault(Int(index), {})[field if dot else None] = value
            if len(slots) > max_items:
                raise invalid_parameter(name, f"more than {max_items} items")
        return dict(sorted(slots.items()))

    def _json_form(self, name: Str, slots: Slots, max_items: Int) -> JsonArray | None:
        """The JSON array given in ``name``, or as the only ``name.1`` (else ``None``)."""
        whole = self._raw.get(name)
        if whole:
            if slots:
                raise invalid_parameter(name, f"give either {name} or {name}.N, not both")
            return _json_array(name, _parse_json(whole), max_items)
        first = slots.get(1, {}).get(None, "")
        if len(slots) == 1 and first.startswith("["):
            parsed = _parse_json(first)
            if isinstance(parsed, list):
                return _json_array(f"{name}.1", parsed, max_items)
        return None

    def list(self, name: Str, *, required: Bool = False, max_items: Int | None = None) -> StrList:
        limit = MAX_ITEMS if max_items is None else max_items
        slots = self._indexed(name, limit)
        parsed = self._json_form(name, slots, limit)
        if parsed is not None:
            result = [_scalar(name, item) for item in parsed]
        else:
            result = [slot[None] for slot in slots.values() if None in slot]
        if required and not result:
            raise missing_parameter(name)
        return result

    def objects(
        self, name: Str, fields: tuple[Str, ...], *, required: Bool = False, max_items: Int | None = None,
    ) -> Objects:
        limit = MAX_ITEMS if max_items is None else max_items
        slots = self._indexed(name, limit)
        parsed = self._json_form(name, slots, limit)
        if parsed is not None:
            result = [_json_object(name, item, fields) for item in parsed]
        else:
            result = [{f: slot[f] for f in fields if f in slot} for slot in slots.values()]
        if required and not result:
            raise missing_parameter(name)
        return result
