"""Anti-replay: a request's time must be near now and its nonce never seen in the window."""

from __future__ import annotations

import re
import time
from collections import deque
from datetime import datetime, timezone

from iotvideo.errors import GatewayError

# What the SDKs send: 2024-01-31T08:00:00Z (or with .fff…). For these fromisoformat() is
# exact and ≈ 20 times cheaper than strptime; anything else goes the strptime way, so
# the formats accepted (and refused) are the same.
_CANONICAL = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?Z").fullmatch


_PARSED: dict[str, float] = {}  # recent times -> epoch seconds: a second's requests share one
_MAX_PARSED = 1024


def parse_utc(value: str) -> float:
    """Epoch seconds of an ISO-8601 UTC time as the SDKs send it (``…Z``)."""
    t = _PARSED.get(value)
    if t is None:
        t = _parse_utc(value)
        if len(_PARSED) >= _MAX_PARSED:
            _PARSED.clear()
        _PARSED[value] = t
    return t


def _parse_utc(value: str) -> float:
    if _CANONICAL(value) is not None:
        try:
            return datetime.fromisoformat(value).timestamp()  # "Z": UTC (Python ≥ 3.11)
        except ValueError:  # out of range (month 13, …): refused below as well
            pass
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            continue
    raise GatewayError(400, "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted.")


class ReplayGuard:
    """Remembers (AccessKeyId, nonce) pairs for the window; bounded memory.

    Expiry is incremental: pairs are kept in arrival order (a deque beside the dict) and
    each check forgets the few at the front whose time is up, so the work is the same for
    every request (no periodic sweep of the whole dict, which stalled every request in
    flight for milliseconds once it held a few 100,000 pairs).

    One process's memory: several API nodes each keep their own, so a nonce replayed
    to a *different* node inside the window is not caught (docs/security.md).
    """

    def __init__(self, window_s: int, max_entries: int = 2_000_000) -> None:
        self.window_s = window_s
        self._max = max_entries
        # "AccessKeyId NUL nonce" -> expiry; strings and floats only, so the per-request
        # entries are nothing the cyclic GC tracks (tuples were: every request left two
        # behind for the window, and the collections they caused stalled the loop).
        # The AccessKeyId is a verified one (checked after the signature): no NUL in it.
        self._seen: dict[str, float] = {}
        self._order: deque[str] = deque()

    def check(self, key_id: str, nonce: str, timestamp: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        t = parse_utc(timestamp)
        if abs(now - t) > self.window_s:
            raise GatewayError(400, "InvalidTimeStamp.Expired",
                               f"Specified time stamp or date value is expired: it must be within {self.window_s} s of the server time.")
        if not nonce or len(nonce) > 128:
            raise GatewayError(400, "MissingSignatureNonce", "The signature nonce must be 1..128 characters.")
        seen, order = self._seen, self._order
        if order and seen.get(order[0], 0.0) <= now:
            self._expire(now)
        k = f"{key_id}\0{nonce}"
        if k in seen:
            raise GatewayError(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
        if len(seen) >= self._max:
            raise GatewayError(503, "ServiceUnavailable", "Too many requests in the replay window.")
        seen[k] = now + self.window_s
        order.append(k)

    def _expire(self, now: float) -> None:
        """Forgets the pairs whose time is up, from the oldest (at most 64 a call, so no
        call pays for a backlog: arrivals are at most one per call)."""
        order, seen = self._order, self._seen
        for _ in range(64):
            if not order:
                return
            exp = seen.get(order[0])
            if exp is not None and exp > now:
                return
            k = order.popleft()
            if exp is not None:
                del seen[k]

    def __len__(self) -> int:
        return len(self._seen)
