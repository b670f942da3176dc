"""Console sign-in throttling: failed passwords lock a user name (and a noisy peer) out for a while.

Pure bookkeeping with an injectable clock; ``console.web`` asks ``wait_s`` before checking a
password and reports each outcome. A user name that failed ``max_failures`` times within
``window_s`` is locked for ``lockout_s``, doubling with every further lockout up to
``max_lockout_s``; a peer address gets the same treatment after ``peer_max_failures``
failures (higher, since users behind one proxy or NAT share an address). While locked, the
password is not even checked, so guessing gains nothing and costs us no scrypt. A success
clears the user name's record (not the peer's). Memory is bounded: at ``limit`` records
the expired ones are dropped, then the oldest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SignInThrottle"]


@dataclass(slots=True)
class _Record:
    failures: list[float]  # times of the failures still inside the window
    locked_until: float = 0.0
    lockouts: int = 0  # consecutive lockouts (each doubles the next)
    last: float = 0.0


class _Counter:
    """Failures per key; a key with ``max_failures`` inside ``window_s`` gets locked."""

    def __init__(self, max_failures: int, window_s: float, lockout_s: float, max_lockout_s: float,
                 limit: int) -> None:
        self.max_failures, self.window_s = max_failures, window_s
        self.lockout_s, self.max_lockout_s, self.limit = lockout_s, max_lockout_s, limit
        self.records: dict[str, _Record] = {}

    def wait_s(self, key: str, now: float) -> float:
        r = self.records.get(key)
        return max(0.0, r.locked_until - now) if r is not None else 0.0

    def fail(self, key: str, now: float) -> None:
        r = self.records.get(key)
        if r is None:
            if len(self.records) >= self.limit:
                self._purge(now)
            r = self.records[key] = _Record([])
        r.last = now
        r.failures = [t for t in r.failures if now - t < self.window_s]
        r.failures.append(now)
        if len(r.failures) >= self.max_failures:
            r.locked_until = now + min(self.max_lockout_s, self.lockout_s * (2 ** r.lockouts))
            r.lockouts += 1
            r.failures.clear()

    def clear(self, key: str) -> None:
        self.records.pop(key, None)

    def _purge(self, now: float) -> None:
        horizon = max(self.window_s, self.max_lockout_s)
        for key, r in list(self.records.items()):
            if r.locked_until <= now and now - r.last >= horizon:
                del self.records[key]
        while len(self.records) >= self.limit:  # still full: forget the least recently failed
            del self.records[min(self.records, key=lambda k: self.records[k].last)]


class SignInThrottle:
    def __init__(
        self,
        *,
        max_failures: int = 5,
        peer_max_failures: int = 50,
        window_s: float = 900.0,
        lockout_s: float = 60.0,
        max_lockout_s: float = 3600.0,
        limit: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._users = _Counter(max_failures, window_s, lockout_s, max_lockout_s, limit)
        self._peers = _Counter(peer_max_failures, window_s, lockout_s, max_lockout_s, limit)
        self._clock = clock

    @staticmethod
    def _user_key(username: str) -> str:
        return username.strip().lower()[:64]

    def wait_s(self, username: str, peer: str) -> float:
        """Seconds before this user name may try again from this peer; 0 when it may now."""
        now = self._clock()
        return max(self._users.wait_s(self._user_key(username), now), self._peers.wait_s(peer, now))

    def failed(self, username: str, peer: str) -> None:
        now = self._clock()
        self._users.fail(self._user_key(username), now)
        self._peers.fail(peer, now)

    def succeeded(self, username: str) -> None:
        self._users.clear(self._user_key(username))

    def __len__(self) -> int:
        return len(self._users.records) + len(self._peers.records)
