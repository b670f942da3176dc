"""MQTT topic names, filters, matching rules (spec 4.7) and the subscription trie."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iotvideo.devicelink.mqtt import TopicTrie, topic_matches, valid_topic_filter, valid_topic_name


@pytest.mark.parametrize(
    ("topic", "ok"),
    [
        ("sport/tennis/player1", True),
        ("/", True),
        ("/finance", True),
        ("a//b", True),
        (" spaced topic ", True),
        ("$SYS/broker", True),
        ("caf\u00e9/\u4e2d\u6587", True),
        ("", False),
        ("sport/+", False),
        ("sport/#", False),
        ("a#b", False),
        ("a\x00b", False),
        ("\ud800", False),
        ("x" * 65535, True),
        ("x" * 65536, False),
        ("\u00e9" * 32768, False),  # 65,536 UTF-8 bytes
        (None, False),
    ],
)
def test_valid_topic_name(topic: str, ok: bool) -> None:
    assert valid_topic_name(topic) is ok


@pytest.mark.parametrize(
    ("topic_filter", "ok"),
    [
        ("#", True),
        ("+", True),
        ("sport/#", True),
        ("sport/tennis/#", True),
        ("+/tennis/#", True),
        ("sport/+/player1", True),
        ("+/+", True),
        ("/+", True),
        ("$SYS/#", True),
        ("a//b", True),
        ("/", True),
        ("", False),
        ("sport/tennis#", False),
        ("sport/tennis/#/ranking", False),
        ("#/a", False),
        ("##", False),
        ("sport+", False),
        ("+sport", False),
        ("a/++/b", False),
        ("a\x00", False),
        ("\udfff", False),
        ("x" * 65536, False),
    ],
)
def test_valid_topic_filter(topic_filter: str, ok: bool) -> None:
    assert valid_topic_filter(topic_filter) is ok


@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        # spec 4.7.1.2
        ("sport/tennis/player1/#", "sport/tennis/player1", True),
        ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
        ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
        ("sport/#", "sport", True),
        ("#", "sport/tennis", True),
        ("#", "/", True),
        # spec 4.7.1.3
        ("sport/tennis/+", "sport/tennis/player1", True),
        ("sport/tennis/+", "sport/tennis/player2", True),
        ("sport/tennis/+", "sport/tennis/player1/ranking", False),
        ("sport/+", "sport", False),
        ("sport/+", "sport/", True),
        ("+/+", "/finance", True),
        ("/+", "/finance", True),
        ("+", "/finance", False),
        ("+", "finance", True),
        ("+/#", "a", True),
        # exact and case-sensitive
        ("ACCOUNTS", "Accounts", False),
        ("a/b", "a/b", True),
        ("a/b", "a/b/", False),
        ("a/b/c", "a/b", False),
        # spec 4.7.2: '$' topics
        ("#", "$SYS/broker/uptime", False),
        ("+/monitor/Clients", "$SYS/monitor/Clients", False),
        ("+", "$SYS", False),
        ("$SYS/#", "$SYS/monitor/Clients", True),
        ("$SYS/#", "$SYS", True),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
        ("a/+", "a/$b", True),
        ("a/#", "a/$b/c", True),
    ],
)
def test_topic_matches(topic_filter: str, topic: str, matches: bool) -> None:
    assert topic_matches(topic_filter, topic) is matches
    trie: TopicTrie[str] = TopicTrie()
    trie.add(topic_filter, "s")
    assert trie.match(topic) == ({"s"} if matches else set())


def test_trie_add_remove_and_prune() -> None:
    trie: TopicTrie[str] = TopicTrie()
    assert trie.add("dev/+/event", "handler")
    assert not trie.add("dev/+/event", "handler")
    assert trie.add("dev/cam1/#", "cam1")
    assert trie.add("dev/cam1/event", "audit")
    assert trie.add("#", "logger")
    assert len(trie) == 4
    assert trie.match("dev/cam1/event") == {"handler", "cam1", "audit", "logger"}
    assert trie.match("dev/cam2/event") == {"handler", "logger"}
    assert trie.match("dev/cam1") == {"cam1", "logger"}
    assert trie.match("$SYS/load") == set()
    assert not trie.remove("dev/+/event", "nobody")
    assert not trie.remove("dev/+/nothing", "handler")
    assert not trie.remove("bad#filter", "handler")
    for f, s in [("dev/+/event", "handler"), ("dev/cam1/#", "cam1"), ("dev/cam1/event", "audit"), ("#", "logger")]:
        assert trie.remove(f, s)
    assert len(trie) == 0
    assert trie.match("dev/cam1/event") == set()
    assert trie._root.children == {}  # no empty nodes left behind after churn


def test_trie_rejects_invalid_filters_and_returns_fresh_sets() -> None:
    trie: TopicTrie[int] = TopicTrie()
    for bad in ("", "a/#/b", "a+", "x\x00"):
        with pytest.raises(ValueError):
            trie.add(bad, 1)
    trie.add("a", 1)
    trie.match("a").add(2)
    assert trie.match("a") == {1}


def test_trie_many_device_subscriptions() -> None:
    trie: TopicTrie[str] = TopicTrie()
    for i in range(10_000):
        trie.add(f"dev/cam{i}/cmd", f"cam{i}")
    trie.add("dev/+/cmd", "audit")
    assert len(trie) == 10_001
    assert trie.match("dev/cam4242/cmd") == {"cam4242", "audit"}
    assert trie.match("dev/cam10000/cmd") == {"audit"}


# --- trie agrees with brute force -----------------------------------------------------------------

_levels = st.sampled_from(["a", "b", "", "$s", "c d"])
topics = st.lists(_levels, min_size=1, max_size=5).map("/".join).filter(bool)
filters = st.builds(
    lambda parts, hash_: "/".join(parts + ["#"] * hash_),
    st.lists(_levels | st.just("+"), max_size=5),
    st.booleans(),
).filter(bool)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(filters, st.integers(0, 5)), max_size=25),
    st.lists(st.integers(0, 24), max_size=10),
    st.lists(topics, min_size=1, max_size=10),
)
def test_trie_match_agrees_with_topic_matches(
    subs: list[tuple[str, int]], removals: list[int], probe: list[str]
) -> None:
    trie: TopicTrie[int] = TopicTrie()
    held: set[tuple[str, int]] = set()
    for f, s in subs:
        assert valid_topic_filter(f)
        assert trie.add(f, s) == ((f, s) not in held)
        held.add((f, s))
    for r in removals:
        if r < len(subs):
            pair = subs[r]
            assert trie.remove(*pair) == (pair in held)
            held.discard(pair)
    assert len(trie) == len(held)
    for topic in probe:
        assert valid_topic_name(topic)
        assert trie.match(topic) == {s for f, s in held if topic_matches(f, topic)}


@settings(max_examples=200, deadline=None)
@given(filters, topics)
def test_matches_is_consistent_with_level_semantics(topic_filter: str, topic: str) -> None:
    """An independent regex reading of the rules agrees with topic_matches."""
    import re

    if topic.startswith("$") and topic_filter[:1] in "+#":
        assert not topic_matches(topic_filter, topic)
        return
    parts = ["[^/]*" if level == "+" else re.escape(level) for level in topic_filter.split("/")]
    if topic_filter == "#":
        pattern = ".*"
    elif topic_filter.endswith("/#"):
        pattern = "/".join(parts[:-1]) + "(?:/.*)?"
    else:
        pattern = "/".join(parts)
    assert topic_matches(topic_filter, topic) is bool(re.fullmatch(pattern, topic))
