"""Per-device topic rules: what a device may publish, subscribe to, and receive without subscribing.

A device's namespace (``{pk}``/``{dn}`` are its own ProductKey and DeviceName; ``{id}`` is any one level,
``…`` is zero or more further levels):

==========================================  =========  ==========================================
topic                                       publish    subscribe / receive
==========================================  =========  ==========================================
``/sys/{pk}/{dn}/…``                        yes [1]_   yes (implicit)
``/ext/rrpc/{id}/sys/{pk}/{dn}/…``          yes        yes (implicit)
``/ext/rrpc/{id}/{pk}/{dn}/user/…``         yes        yes (subscribe ``/ext/rrpc/+/{pk}/{dn}/user/…``)
``/{pk}/{dn}/user/…`` (custom topics)       yes        yes
``/ext/session/{pk}/{dn}/…``                yes        yes
``/ext/ntp/{pk}/{dn}/request|response``     request    yes
``/ota/device/inform|progress|request/…``   yes        yes
``/ota/device/upgrade/{pk}/{dn}``           no         yes (implicit)
``/shadow/update/{pk}/{dn}``                yes        yes
``/shadow/get/{pk}/{dn}``                   no         yes (implicit)
==========================================  =========  ==========================================

.. [1] except the cloud's requests to the device: ``thing/service/{x}`` (any ``x`` not ending in
   ``_reply``, which includes ``property/set``) and ``thing/model/down_raw``.

A subscription filter is allowed only when *every* topic it can match is in the namespace, so
``/sys/{pk}/{dn}/#`` and ``/ext/rrpc/+/sys/{pk}/{dn}/#`` are fine but ``/sys/{pk}/+/#``, ``/sys/#``,
``#`` and ``+/…`` are refused.

Implicit delivery (:func:`implicit_topics`): devices built on the official SDK never SUBSCRIBE to their
system topics.  The broker subscribes every device session to ``/sys/{pk}/{dn}/#`` — which covers
``thing/service/+``, ``thing/service/property/set``, every ``…_reply`` and anything else the cloud
sends there — plus RRPC requests, OTA upgrade notices and shadow pushes.  Only the device itself and
the cloud can publish in these namespaces, so the broker must treat implicit subscriptions as
*no-local*: a device's own PUBLISH is never delivered back to it (an RRPC reply goes out on the
request's topic, a service reply on a ``/sys/…`` topic).
"""

from __future__ import annotations

from typing import Final

from .auth import valid_device_name, valid_product_key
from .mqtt.topics import valid_topic_filter, valid_topic_name

__all__ = ["device_may_publish", "device_may_subscribe", "implicit_topics", "in_namespace"]

_ANY: Final = object()   # exactly one level, any content
_REST: Final = object()  # zero or more further levels

_Pattern = tuple[object, ...]  # str literal | frozenset of literals | _ANY | _REST


def _rules(pk: str, dn: str, *, publish: bool) -> list[_Pattern]:
    ota = frozenset({"inform", "progress", "request"} if publish else {"inform", "progress", "request", "upgrade"})
    shadow = frozenset({"update"} if publish else {"update", "get"})
    ntp = frozenset({"request"} if publish else {"request", "response"})
    return [
        ("", "sys", pk, dn, _REST),
        ("", "ext", "rrpc", _ANY, "sys", pk, dn, _REST),
        ("", "ext", "rrpc", _ANY, pk, dn, "user", _REST),
        ("", pk, dn, "user", _REST),
        ("", "ext", "session", pk, dn, _REST),
        ("", "ext", "ntp", pk, dn, ntp),
        ("", "ota", "device", ota, pk, dn),
        ("", "shadow", shadow, pk, dn),
    ]


def _level_ok(part: object, level: str) -> bool:
    if part is _ANY:
        return True
    if isinstance(part, frozenset):
        return level in part
    return part == level


def _name_matches(levels: list[str], rule: _Pattern) -> bool:
    """Whether a concrete topic (split into levels) matches a rule."""
    for i, part in enumerate(rule):
        if part is _REST:
            return True
        if i >= len(levels) or not _level_ok(part, levels[i]):
            return False
    return len(levels) == len(rule)


def _filter_contained(parts: list[str], rule: _Pattern) -> bool:
    """Whether every topic matched by the (valid) filter ``parts`` matches ``rule``."""
    for i, part in enumerate(rule):
        if part is _REST:
            return True  # the rule absorbs whatever the filter still matches
        if i >= len(parts):
            return False  # the filter ends but the rule needs more levels
        f = parts[i]
        if f == "#":
            return False  # '#' matches the parent and deeper topics; only _REST absorbs them
        if f == "+":
            if part is not _ANY:
                return False
        elif not _level_ok(part, f):
            return False
    return len(parts) == len(rule)


def _ids_ok(pk: str, dn: str) -> bool:
    return valid_product_key(pk) and valid_device_name(dn)


def _cloud_request(levels: list[str]) -> bool:
    """``/sys/{pk}/{dn}/thing/service/{x}`` (x not ``…_reply``) or ``…/thing/model/down_raw``."""
    rest = levels[4:]
    if len(rest) >= 3 and rest[0] == "thing" and rest[1] == "service":
        return not rest[-1].endswith("_reply")
    return rest == ["thing", "model", "down_raw"]


def in_namespace(pk: str, dn: str, topic: str) -> bool:
    """Whether a concrete topic name is one the device may receive (see the module table)."""
    if not _ids_ok(pk, dn) or not valid_topic_name(topic):
        return False
    levels = topic.split("/")
    return any(_name_matches(levels, r) for r in _rules(pk, dn, publish=False))


def device_may_publish(pk: str, dn: str, topic: str) -> bool:
    """Whether device ``pk``/``dn`` may PUBLISH to ``topic`` (a topic name, never a filter)."""
    if not _ids_ok(pk, dn) or not valid_topic_name(topic):
        return False
    levels = topic.split("/")
    for rule in _rules(pk, dn, publish=True):
        if _name_matches(levels, rule):
            return not (rule[1] == "sys" and _cloud_request(levels))
    return False


def device_may_subscribe(pk: str, dn: str, topic_filter: str) -> bool:
    """Whether device ``pk``/``dn`` may SUBSCRIBE to ``topic_filter``: all it can match is its own."""
    if not _ids_ok(pk, dn) or not valid_topic_filter(topic_filter):
        return False
    parts = topic_filter.split("/")
    return any(_filter_contained(parts, r) for r in _rules(pk, dn, publish=False))


def implicit_topics(pk: str, dn: str) -> list[str]:
    """Filters every device session receives without subscribing (deliver them no-local)."""
    return [
        f"/sys/{pk}/{dn}/#",
        f"/ext/rrpc/+/sys/{pk}/{dn}/#",
        f"/ota/device/upgrade/{pk}/{dn}",
        f"/shadow/get/{pk}/{dn}",
    ]
