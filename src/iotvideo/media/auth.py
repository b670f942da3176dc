"""Who may publish or play a stream: the interface every media server asks, and a static implementation.

Servers (RTMP, HTTP-FLV, HLS) pass the ``app`` (the RTMP application, or ``"live"`` for
HTTP-FLV and ``"hls"`` for HLS), the stream name as the client sent it, query string
included (``"cam1?token=…"``), and the peer address; the authorizer answers with the hub
key to use (for a player, possibly a ``PlayGrant``: the key and where to start) or raises
``MediaAuthError``. The live-session layer provides the real one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import parse_qs

from .hub import HubKey
from .tokens import TokenError, TokenKind, TokenSigner

__all__ = ["MAX_CACHE_MS", "MediaAuthError", "MediaAuthorizer", "PlayGrant", "StaticAuthorizer", "cache_ms_of",
           "play_grant", "split_name"]

MAX_CACHE_MS: Final = 10_000  # the API's CacheDuration bound


class MediaAuthError(Exception):
    """A publish or play request refused. ``reason`` is for the client; ``code`` is one of the class codes."""

    DENIED: Final = "denied"  # no or bad credentials
    NOT_FOUND: Final = "not_found"  # no such stream
    UNAVAILABLE: Final = "unavailable"  # the authorizer could not decide (timeout, failure)

    def __init__(self, reason: str, code: str = DENIED) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True, slots=True)
class PlayGrant:
    """A play request allowed: the hub to read, and how far behind the live edge to start
    (``cache_ms``, the API's ``CacheDuration``: the latest key frame at least that far back,
    as far as the hub's cache reaches; 0 starts on the current GOP)."""

    key: HubKey
    cache_ms: int = 0


def play_grant(answer: HubKey | PlayGrant) -> PlayGrant:
    """An authorizer's answer to a play request as a ``PlayGrant`` (a bare key starts on the current GOP)."""
    return answer if isinstance(answer, PlayGrant) else PlayGrant(answer)


def cache_ms_of(extra: Mapping[str, Any]) -> int:
    """The ``CacheDuration`` a play token carries (``extra["c"]``, ms), bounded to 0..``MAX_CACHE_MS``."""
    value = extra.get("c", 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(0, min(MAX_CACHE_MS, int(value)))


class MediaAuthorizer(Protocol):
    """Decides publish and play requests for every media server of a node."""

    async def authorize_publish(self, app: str, name_with_query: str, peer: str) -> HubKey:
        """The hub the publisher feeds; raises ``MediaAuthError``."""
        ...

    async def authorize_play(self, app: str, name_with_query: str, peer: str) -> HubKey | PlayGrant:
        """The hub the player reads (and where it starts: ``PlayGrant``); raises ``MediaAuthError``."""
        ...


def split_name(name_with_query: str) -> tuple[str, dict[str, str]]:
    """``"cam1?token=abc&x=1"`` → ``("cam1", {"token": "abc", "x": "1"})`` (first value of each parameter)."""
    name, _, query = name_with_query.partition("?")
    params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
    return name, params


class StaticAuthorizer:
    """For tests and single-user setups: fixed streams, or signed tokens whose subject is the stream name.

    With ``streams`` (name → hub key) a known name is allowed; with ``signer`` the request
    needs ``?token=`` verifying as a push (publish) or play token for that name, and the hub
    key is the name. Both given: a listed name still needs its token. ``app``, when set,
    must match for RTMP requests (HTTP players use ``"live"``/``"hls"`` and are not checked).
    A play token's ``CacheDuration`` (``extra["c"]``) comes back in the ``PlayGrant``.
    """

    def __init__(
        self,
        streams: Mapping[str, HubKey] | None = None,
        *,
        signer: TokenSigner | None = None,
        app: str | None = None,
    ) -> None:
        if streams is None and signer is None:
            streams = {}
        self.streams = dict(streams) if streams is not None else None
        self.signer = signer
        self.app = app

    async def authorize_publish(self, app: str, name_with_query: str, peer: str) -> HubKey:
        return self._decide("push", app, name_with_query, http=False).key

    async def authorize_play(self, app: str, name_with_query: str, peer: str) -> PlayGrant:
        return self._decide("play", app, name_with_query, http=app in ("live", "hls"))

    def _decide(self, kind: TokenKind, app: str, name_with_query: str, *, http: bool) -> PlayGrant:
        if self.app is not None and not http and app != self.app:
            raise MediaAuthError(f"unknown application {app!r}", MediaAuthError.NOT_FOUND)
        name, params = split_name(name_with_query)
        key: HubKey = name
        if self.streams is not None:
            if name not in self.streams:
                raise MediaAuthError("unknown stream", MediaAuthError.NOT_FOUND)
            key = self.streams[name]
        if self.signer is not None:
            token = params.get("token")
            if not token:
                raise MediaAuthError("a token is required")
            try:
                claims = self.signer.verify(token, kind, subject=name)
            except TokenError as e:
                raise MediaAuthError(f"token refused: {e.reason}") from None
            return PlayGrant(key, cache_ms_of(claims.extra))
        return PlayGrant(key)

