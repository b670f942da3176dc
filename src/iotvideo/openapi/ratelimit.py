"""Per-AccessKey rate limit: a token bucket refilled at a steady rate."""

from __future__ import annotations

import time

from iotvideo.errors import GatewayError


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate = rate_per_s
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key_id: str, now: float | None = None) -> None:
        """Spend one token of this key or raise the throttling error."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key_id] = (tokens, now)
            raise GatewayError(429, "Throttling.User", "request too frequently.",
                               "Slow down: the per-AccessKey rate limit was reached.")
        self._buckets[key_id] = (tokens - 1.0, now)
