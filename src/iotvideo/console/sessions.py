"""Console sign-in sessions, kept in memory (a restart signs everyone out).

The cookie holds a random session id and its HMAC under a per-process key, so a forged or
guessed cookie is refused before any lookup. A session ends after ``idle_s`` without use
or ``max_s`` after sign-in, whichever comes first.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from iotvideo.domain.users import ConsoleUser


@dataclass
class Session:
    user: ConsoleUser
    created: float
    last_used: float


class Sessions:
    def __init__(self, idle_s: float = 8 * 3600, max_s: float = 24 * 3600, limit: int = 100_000) -> None:
        self.idle_s, self.max_s, self.limit = idle_s, max_s, limit
        self._key = secrets.token_bytes(32)
        self._sessions: dict[str, Session] = {}

    def _sign(self, sid: str) -> str:
        mac = hmac.new(self._key, sid.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def create(self, user: ConsoleUser) -> str:
        """A new session for ``user``; answers the cookie value."""
        now = time.monotonic()
        if len(self._sessions) >= self.limit:
            self.purge(now)
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = Session(user, now, now)
        return f"{sid}.{self._sign(sid)}"

    def get(self, cookie: str | None) -> ConsoleUser | None:
        if not cookie or "." not in cookie:
            return None
        sid, mac = cookie.rsplit(".", 1)
        if not hmac.compare_digest(mac, self._sign(sid)):
            return None
        s = self._sessions.get(sid)
        now = time.monotonic()
        if s is None:
            return None
        if now - s.last_used > self.idle_s or now - s.created > self.max_s:
            del self._sessions[sid]
            return None
        s.last_used = now
        return s.user

    def end(self, cookie: str | None) -> None:
        if cookie and "." in cookie:
            sid, mac = cookie.rsplit(".", 1)
            if hmac.compare_digest(mac, self._sign(sid)):
                self._sessions.pop(sid, None)

    def purge(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for sid, s in list(self._sessions.items()):
            if now - s.last_used > self.idle_s or now - s.created > self.max_s:
                del self._sessions[sid]
