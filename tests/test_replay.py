"""The anti-replay window (openapi/replay.py): nonces refused inside it, forgotten after it, bounded."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iotvideo.errors import GatewayError
from iotvideo.openapi.replay import ReplayGuard

T0 = 1_700_000_000.0
STAMP = "2023-11-14T22:13:20Z"  # T0


def stamp(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def code(fn) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(GatewayError) as e:
        fn()
    return e.value.code


def test_a_nonce_is_refused_inside_the_window_and_forgotten_after_it() -> None:
    g = ReplayGuard(900)
    g.check("k", "n1", STAMP, now=T0)
    assert code(lambda: g.check("k", "n1", STAMP, now=T0 + 1)) == "SignatureNonceUsed"
    g.check("other-key", "n1", STAMP, now=T0 + 1)  # per AccessKey
    assert code(lambda: g.check("k", "n1", STAMP, now=T0 + 899)) == "SignatureNonceUsed"
    # Past the window the pair is forgotten (the request's own timestamp must be fresh).
    g.check("k", "n2", "2023-11-14T22:28:20Z", now=T0 + 900.5)
    assert len(g) == 2  # n1 of "k" expired; n1 of "other-key" (T0 + 1 + 900) not yet
    g.check("k", "n3", "2023-11-14T22:28:22Z", now=T0 + 902)
    assert len(g) == 2
    g.check("k", "n1", "2023-11-14T22:28:22Z", now=T0 + 902)


def test_expired_pairs_go_a_few_per_call_and_the_guard_is_bounded() -> None:
    g = ReplayGuard(10, max_entries=1000)
    for i in range(1000):
        g.check("k", f"n{i}", STAMP, now=T0)
    assert code(lambda: g.check("k", "one-too-many", STAMP, now=T0)) == "ServiceUnavailable"
    # Later, each call forgets up to 64 old pairs: room again at once, no sweep of all.
    g.check("k", "later", stamp(T0 + 11), now=T0 + 11)
    assert len(g) == 1000 - 64 + 1
    for i in range(20):
        g.check("k", f"m{i}", stamp(T0 + 11), now=T0 + 11)
    assert len(g) == 21


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 30)), max_size=80))
def test_refuses_exactly_the_repeats_within_the_window(calls: list[tuple[str, int]]) -> None:
    """Against a model: a nonce is refused iff it was accepted less than the window ago."""
    g = ReplayGuard(5)
    accepted: dict[str, float] = {}
    now = T0
    for nonce, step in sorted(calls, key=lambda c: c[1]):
        now = T0 + step
        at = stamp(now)
        refused = nonce in accepted and accepted[nonce] + 5 > now
        if refused:
            assert code(lambda: g.check("k", nonce, at, now=now)) == "SignatureNonceUsed"
        else:
            g.check("k", nonce, at, now=now)
            accepted[nonce] = now
