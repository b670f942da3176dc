"""Anti-replay: a request's time must be near now and its nonce never seen in the window."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone

from iotvideo.errors import GatewayError

# What the SDKs send: 2024-01-31T08:00:00Z (or with .fff…). For these fromisoformat() is
# exact and ≈ 20 times cheaper than strptime; anything else goes the strptime way, so
# the formats accepted (and refused) are the same.
_CANONICAL = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?Z").fullmatch


def parse_utc(value: str) -> float:
    """Epoch seconds of an ISO-8601 UTC time as the SDKs send it (``…Z``)."""
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

    One process's memory: several API nodes each keep their own, so a nonce replayed
    to a *different* node inside the window is not caught (docs/security.md).
    """

    def __init__(self, window_s: int, max_entries: int = 2_000_000) -> None:
        self.window_s = window_s
        self._max = max_entries
        self._seen: dict[tuple[str, str], float] = {}
        self._next_sweep = 0.0

    def check(self, key_id: str, nonce: str, timestamp: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        t = parse_utc(timestamp)
        if abs(now - t) > self.window_s:
            raise GatewayError(400, "InvalidTimeStamp.Expired",
                               f"Specified time stamp or date value is expired: it must be within {self.window_s} s of the server time.")
        if not nonce or len(nonce) > 128:
            raise GatewayError(400, "MissingSignatureNonce", "The signature nonce must be 1..128 characters.")
        if now >= self._next_sweep or len(self._seen) >= self._max:
            self._sweep(now)
        k = (key_id, nonce)
        if k in self._seen:
            raise GatewayError(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
        self._seen[k] = now + self.window_s

    def _sweep(self, now: float) -> None:
        self._seen = {k: exp for k, exp in self._seen.items() if exp > now}
        self._next_sweep = now + 10
        if len(self._seen) >= self._max:
            raise GatewayError(503, "ServiceUnavailable", "Too many requests in the replay window.")
