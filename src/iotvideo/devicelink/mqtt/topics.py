"""MQTT 3.1.1 topic names and filters: validation, matching, and a subscription trie."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["TopicTrie", "topic_matches", "valid_topic_filter", "valid_topic_name"]

_MAX_UTF8 = 0xFFFF

S = TypeVar("S", bound=Hashable)


def _utf8_fits(s: str) -> bool:
    """True if ``s`` encodes to UTF-8 (no lone surrogates) in at most 65,535 bytes."""
    if len(s) > _MAX_UTF8:
        return False
    try:
        return len(s.encode()) <= _MAX_UTF8
    except UnicodeEncodeError:
        return False


def valid_topic_name(topic: str) -> bool:
    """A name a PUBLISH may carry: non-empty, no wildcards, no U+0000, at most 65,535 UTF-8 bytes."""
    if not isinstance(topic, str) or not topic:
        return False
    if "+" in topic or "#" in topic or "\x00" in topic:
        return False
    return _utf8_fits(topic)


def valid_topic_filter(topic_filter: str) -> bool:
    """A filter a SUBSCRIBE may carry: '+' only as a whole level, '#' only as the whole last level."""
    if not isinstance(topic_filter, str) or not topic_filter or "\x00" in topic_filter:
        return False
    if "+" in topic_filter or "#" in topic_filter:
        levels = topic_filter.split("/")
        last = len(levels) - 1
        for i, level in enumerate(levels):
            if "#" in level and (level != "#" or i != last):
                return False
            if "+" in level and level != "+":
                return False
    return _utf8_fits(topic_filter)


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether a valid filter matches a valid topic name (MQTT 3.1.1 section 4.7).

    A filter starting with a wildcard does not match a topic starting with '$' [MQTT-4.7.2-1];
    'a/#' matches 'a'; '+' matches exactly one (possibly empty) level.
    """
    if topic[:1] == "$" and topic_filter[:1] in ("+", "#"):
        return False
    levels = topic.split("/")
    n = len(levels)
    parts = topic_filter.split("/")
    for i, part in enumerate(parts):
        if part == "#":
            return True
        if i >= n:
            return False
        if part != "+" and part != levels[i]:
            return False
    return len(parts) == n


class _Node(Generic[S]):
    __slots__ = ("children", "subs")

    def __init__(self) -> None:
        self.children: dict[str, _Node[S]] = {}
        self.subs: set[S] = set()


class TopicTrie(Generic[S]):
    """Topic filters mapped to sets of subscribers; ``match`` walks one trie path per topic level.

    Subscribers are any hashable values (a session, a handler, a ``(session, qos)`` pair).
    ``add`` rejects invalid filters with ``ValueError``; ``match`` expects a valid topic name.
    """

    __slots__ = ("_count", "_root")

    def __init__(self) -> None:
        self._root: _Node[S] = _Node()
        self._count = 0

    def __len__(self) -> int:
        """Number of (filter, subscriber) pairs held."""
        return self._count

    def add(self, topic_filter: str, subscriber: S) -> bool:
        """Subscribe ``subscriber`` to ``topic_filter``; False if it already was."""
        if not valid_topic_filter(topic_filter):
            raise ValueError(f"invalid topic filter: {topic_filter!r}")
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        if subscriber in node.subs:
            return False
        node.subs.add(subscriber)
        self._count += 1
        return True

    def remove(self, topic_filter: str, subscriber: S) -> bool:
        """Unsubscribe; False if that pair was not held. Prunes nodes left empty."""
        path: list[tuple[_Node[S], str]] = []
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        if subscriber not in node.subs:
            return False
        node.subs.discard(subscriber)
        self._count -= 1
        for parent, level in reversed(path):
            if node.subs or node.children:
                break
            del parent.children[level]
            node = parent
        return True

    def match(self, topic: str) -> set[S]:
        """All subscribers whose filter matches the (valid) topic name ``topic``; a new set."""
        result: set[S] = set()
        nodes = [self._root]
        wild = topic[:1] != "$"  # no wildcard match for '$' topics at the first level
        for level in topic.split("/"):
            nxt: list[_Node[S]] = []
            for node in nodes:
                children = node.children
                if not children:
                    continue
                if wild:
                    rest = children.get("#")
                    if rest is not None:
                        result |= rest.subs
                    plus = children.get("+")
                    if plus is not None:
                        nxt.append(plus)
                exact = children.get(level)
                if exact is not None:
                    nxt.append(exact)
            if not nxt:
                return result
            nodes = nxt
            wild = True
        for node in nodes:
            result |= node.subs
            rest = node.children.get("#")  # 'a/#' also matches 'a'
            if rest is not None:
                result |= rest.subs
        return result
