"""HTTP playback of live hubs: HTTP-FLV (a chunked FLV per player) and Low-Latency HLS with playback sessions.

``GET /live/{name}.flv?token=…`` streams FLV from a hub subscription. ``GET
/hls/{name}/index.m3u8?token=…`` checks the play token once and answers with a
multivariant playlist naming ``index.m3u8?s=<session>``; the media playlist, ``init.mp4``,
``seg<n>.m4s`` and ``part<n>.m4s`` then need that session, which expires after a while
without requests. Both ask the ``MediaAuthorizer`` (``app`` ``"live"`` or ``"hls"``) and
know only the hub registry. Responses allow any origin, for players in the web console.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from . import accel, flvtags
from .auth import MediaAuthError, MediaAuthorizer, PlayGrant, play_grant
from .codecs import CodecError
from .flv import FlvMuxer, frame_tail
from .hls import HlsPackager, render_multivariant
from .frames import MediaFrame
from .hub import FrameMemo, HlsSink, HubClosed, HubKey, HubRegistry, StreamHub, Subscription

__all__ = ["FLV_APP", "HLS_APP", "HlsSession", "HlsSessions", "PlayRoutes"]

FLV_APP: Final = "live"
HLS_APP: Final = "hls"
PLAYLIST: Final = "application/vnd.apple.mpegurl"
CORS: Final = {"Access-Control-Allow-Origin": "*"}
_NO_CACHE: Final = {**CORS, "Cache-Control": "no-cache"}
_MEDIA_CACHE: Final = {**CORS, "Cache-Control": "private, max-age=30"}
_MEDIA_TYPES: Final = {".mp4": "video/mp4", ".m4s": "video/iso.segment"}
_NAME: Final = re.compile(r"[^\x00-\x20\x7f?#]{1,255}")
_RESOURCE: Final = re.compile(r"^(?:init\d*\.mp4|seg\d+\.m4s|part\d+\.m4s)$")
_MAX_PART_INDEX: Final = 1000
TRANSPORT_EXTENSION: Final = "iotvideo.transport"
"""ASGI scope extension where our HTTP protocol (``iotvideo.http_protocol``) puts the connection's
transport: a streaming response may write its body chunks to it directly (HTTP-FLV does)."""
_FLV_DIRECT_HIGH: Final = 1 << 20  # a player whose socket holds more than this gets frames through its queue


@dataclass(slots=True)
class HlsSession:
    """One HLS player, from its first (token) request on."""

    id: str
    key: HubKey
    name: str
    peer: str
    created_at: float
    last_seen: float
    requests: int = 0
    last_msn: int = -1  # the last complete segment a plain (non-blocking) playlist request was given


class HlsSessions:
    """Playback sessions by id; one expires ``idle_s`` after its last request."""

    def __init__(self, idle_s: float = 30.0, max_sessions: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: dict[str, HlsSession] = {}
        self._next_sweep = 0.0

    def open(self, key: HubKey, name: str, peer: str) -> HlsSession | None:
        """A new session, or None when there are already ``max_sessions`` live ones."""
        now = self._clock()
        if now >= self._next_sweep or len(self._sessions) >= self.max_sessions:
            self.sweep(now)
        if len(self._sessions) >= self.max_sessions:
            return None
        session = HlsSession(secrets.token_urlsafe(16), key, name, peer, now, now)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str, name: str) -> HlsSession | None:
        """The live session ``session_id`` for stream ``name``, marked as just used."""
        session = self._sessions.get(session_id)
        if session is None or session.name != name:
            return None
        now = self._clock()
        if now - session.last_seen > self.idle_s:
            del self._sessions[session_id]
            return None
        session.last_seen = now
        session.requests += 1
        return session

    def sweep(self, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        self._sessions = {k: s for k, s in self._sessions.items() if now - s.last_seen <= self.idle_s}
        self._next_sweep = now + self.idle_s

    def for_stream(self, key: HubKey) -> list[HlsSession]:
        """The sessions playing ``key`` (expired ones included until swept)."""
        path = str(key)
        return [s for s in self._sessions.values() if str(s.key) == path]

    def __len__(self) -> int:
        return len(self._sessions)


def _error(status: int, text: str) -> Response:
    return PlainTextResponse(text + "\n", status_code=status, headers=_NO_CACHE)


def _auth_error(e: MediaAuthError) -> Response:
    status = {MediaAuthError.NOT_FOUND: 404, MediaAuthError.UNAVAILABLE: 503}.get(e.code, 403)
    return _error(status, e.reason)


def _peer(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client is not None else ""


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 9:
        raise ValueError(name)
    return int(raw)


_legacy_video_payload = partial(flvtags.video_payload, hevc_legacy=True)


class _FlvStream(Response):
    """A chunked FLV body fed from a subscription; ends with the stream or when the player leaves."""

    media_type = "video/x-flv"

    def __init__(self, hub: StreamHub, sub: Subscription, muxer: FlvMuxer) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers(_NO_CACHE)  # no body attribute: no Content-Length, so the body is chunked
        self.hub, self.sub, self.muxer = hub, sub, muxer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub = self.sub
        watcher = asyncio.create_task(self._watch(receive))
        transport = scope.get("extensions", {}).get(TRANSPORT_EXTENSION)
        sending = False  # frames taken from the queue are being sent: a direct write would pass them
        muxer = self.muxer
        direct = None  # the C direct output, when built (the Python ``take`` below otherwise)
        if transport is not None and accel.FlvOut is not None:
            sock = transport.get_extra_info("socket")
            plain = sock is not None and transport.get_extra_info("ssl_object") is None
            direct = accel.FlvOut(transport.write, muxer.timeline, muxer.tails, transport=transport,
                               fd=sock.fileno() if plain else -1, max_buffer=_FLV_DIRECT_HIGH)

        def take(f: MediaFrame) -> bool:
            """Direct delivery (``Subscription.deliver_to``): one HTTP chunk per frame, written from
            the publisher's call while the socket keeps up; else the frame goes to the queue."""
            if sending or transport.is_closing() or transport.get_write_buffer_size() > _FLV_DIRECT_HIGH:
                return False
            try:
                header, tail = muxer.frame_parts(f)
            except flvtags.FlvError:
                return True  # as the queued path does: a frame FLV cannot carry is skipped
            transport.writelines((b"%x\r\n" % (len(header) + len(tail)), header, tail, b"\r\n"))
            return True

        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            started = False
            while True:
                frames = await sub.batch()
                if not frames:
                    break
                parts: list[bytes] = []
                if not started:
                    stats = self.hub.stats()
                    has_video = stats.video_codec is not None or any(f.is_video for f in frames)
                    has_audio = stats.audio_codec is not None or any(f.is_audio for f in frames)
                    parts.append(muxer.start(has_audio=has_audio, has_video=has_video))
                    started = True
                for f in frames:
                    try:
                        parts.extend(muxer.frame_parts(f))
                    except flvtags.FlvError:
                        continue
                sending = True
                if direct is not None:
                    direct.paused = True
                try:
                    await send({"type": "http.response.body", "body": b"".join(parts), "more_body": True})
                finally:
                    sending = False
                    if direct is not None:
                        direct.paused = False
                if transport is not None:  # from now on frames go straight out while the player keeps up
                    sub.deliver_to(take if direct is None else direct)
            sub.deliver_to(None)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the player went away
        finally:
            sub.deliver_to(None)
            if direct is not None:
                direct.closing = True
            watcher.cancel()
            sub.close()

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.sub.close()


class PlayRoutes:
    """The player-facing HTTP routes of a media node (mount ``routes`` into a Starlette app)."""

    def __init__(
        self,
        registry: HubRegistry,
        authorizer: MediaAuthorizer,
        *,
        sessions: HlsSessions | None = None,
        first_media_wait_s: float = 8.0,
        auth_timeout_s: float = 10.0,
    ) -> None:
        self.registry = registry
        self.authorizer = authorizer
        self.sessions = sessions or HlsSessions()
        self.first_media_wait_s = first_media_wait_s  # how long a playlist waits for a stream not live yet
        self.auth_timeout_s = auth_timeout_s
        # each frame's FLV tag tail, built once for every HTTP-FLV player (and once more for ``hevc=legacy`` ones)
        self._flv_tails = FrameMemo(frame_tail)
        self._flv_tails_legacy = FrameMemo(partial(frame_tail, video_payload=_legacy_video_payload))
        self.routes = [
            Route("/live/{name:path}.flv", self.flv, methods=["GET", "OPTIONS"]),
            Route("/hls/{name:path}/{resource}", self.hls, methods=["GET", "OPTIONS"]),
        ]

    async def _authorize(self, app: str, name: str, request: Request) -> HubKey:
        return (await self._grant(app, name, request)).key

    async def _grant(self, app: str, name: str, request: Request) -> PlayGrant:
        query = request.url.query
        call = self.authorizer.authorize_play(app, f"{name}?{query}" if query else name, _peer(request))
        try:
            return play_grant(await asyncio.wait_for(call, self.auth_timeout_s))
        except TimeoutError:
            raise MediaAuthError("authorization timed out", MediaAuthError.UNAVAILABLE) from None

    @staticmethod
    def _preflight() -> Response:
        return Response(status_code=204, headers={
            **CORS, "Access-Control-Allow-Methods": "GET, OPTIONS", "Access-Control-Allow-Headers": "*",
            "Access-Control-Max-Age": "86400",
        })  # fmt: skip

    # --- HTTP-FLV ----------------------------------------------------------------------

    async def flv(self, request: Request) -> Response:
        """``/live/{name}.flv?token=…`` (``&hevc=legacy`` for players that only know FLV codec id 12)."""
        if request.method == "OPTIONS":
            return self._preflight()
        name = request.path_params["name"]
        if not _NAME.fullmatch(name):
            return _error(404, "no such stream")
        try:
            grant = await self._grant(FLV_APP, name, request)
            hub = self.registry.get_or_create(grant.key)
            sub = hub.subscribe(preroll_s=grant.cache_ms / 1000)
        except MediaAuthError as e:
            return _auth_error(e)
        except HubClosed:
            return _error(404, "the stream is closed")
        if request.query_params.get("hevc") == "legacy":
            muxer = FlvMuxer(video_payload=_legacy_video_payload, tails=self._flv_tails_legacy, timeline=accel.Timeline())
        else:
            muxer = FlvMuxer(tails=self._flv_tails, timeline=accel.Timeline())
        return _FlvStream(hub, sub, muxer)

    # --- HLS ---------------------------------------------------------------------------

    async def hls(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return self._preflight()
        name, resource = request.path_params["name"], request.path_params["resource"]
        if not _NAME.fullmatch(name):
            return _error(404, "no such stream")
        session_id = request.query_params.get("s")
        if resource == "index.m3u8" and session_id is None:
            return await self._open_session(name, request)
        session = self.sessions.get(session_id or "", name)
        if session is None:
            return _error(403, "no playback session, or it expired: request index.m3u8 with a token")
        hub = self.registry.get(session.key)
        if hub is None or hub.closed:
            return _error(404, "the stream has ended")
        hub.touch()
        hls = hub.hls or hub.enable_hls()
        if resource == "index.m3u8":
            return await self._media_playlist(hls, session, request)
        if not _RESOURCE.match(resource):
            return _error(404, "no such resource")
        return await self._resource(hls, resource)

    async def _open_session(self, name: str, request: Request) -> Response:
        """The first request: token → session, answered with a multivariant playlist naming it."""
        try:
            key = await self._authorize(HLS_APP, name, request)
            hub = self.registry.get_or_create(key)
        except MediaAuthError as e:
            return _auth_error(e)
        hub.touch()
        hls = hub.hls or hub.enable_hls()
        session = self.sessions.open(key, name, _peer(request))
        if session is None:
            return _error(503, "too many playback sessions")
        await self._wait(hls, lambda p: bool(p.tracks), self.first_media_wait_s)
        uri = f"index.m3u8?s={session.id}"
        try:
            body = render_multivariant([hls.packager.variant(uri)])
        except CodecError:  # not live yet: the player learns the codecs from the init segment
            body = f"#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-STREAM-INF:BANDWIDTH=2000000\n{uri}\n"
        return Response(body, media_type=PLAYLIST, headers=_NO_CACHE)

    async def _media_playlist(self, hls: HlsSink, session: HlsSession, request: Request) -> Response:
        """The live playlist; ``_HLS_msn``/``_HLS_part`` block until that segment or part exists."""
        try:
            msn = _int_param(request, "_HLS_msn")
            part = _int_param(request, "_HLS_part")
        except ValueError as e:
            return _error(400, f"bad {e}")
        if msn is None:
            if part is not None:
                return _error(400, "_HLS_part without _HLS_msn")
            # A stream just starting: wait for its first segment (every player needs one). A player
            # reloading without blocking (FFmpeg, VLC) that was given the last segment already waits
            # for the next one, up to a target duration, as a blocking reload would: it gets each
            # segment when it is complete instead of at its own reload interval.
            seen = session.last_msn
            wait_s = self.first_media_wait_s if seen < 0 else float(hls.packager.target_duration())
            await self._wait(hls, lambda p: (bool(p.segments) and p.segments[-1].msn > seen) or p.ended, wait_s)
            segments = hls.packager.segments
            session.last_msn = segments[-1].msn if segments else -1
        else:
            packager = hls.packager
            if not packager.blocking_request_valid(msn) or (part is not None and part > _MAX_PART_INDEX):
                return _error(400, "_HLS_msn/_HLS_part too far ahead of the playlist")
            await self._wait(hls, lambda p: p.ready_for(msn, part), self._block_s(packager))
        packager = hls.packager
        if packager.version == 0:
            return _error(404, "the stream is not live")
        suffix = f"?s={session.id}"
        body = packager.media_playlist(lambda resource: resource + suffix)
        return Response(body, media_type=PLAYLIST, headers=_NO_CACHE)

    async def _resource(self, hls: HlsSink, resource: str) -> Response:
        """``init.mp4``, ``seg<n>.m4s`` or ``part<n>.m4s``; one announced but not finished yet is awaited."""
        packager = hls.packager
        data = packager.resource(resource)
        if data is None and packager.pending(resource):
            await self._wait(hls, lambda p: p.resource(resource) is not None or not p.pending(resource), self._block_s(packager))
            data = hls.packager.resource(resource)
        if data is None:
            return _error(404, "no such segment or part (any more)")
        media_type = _MEDIA_TYPES[resource[-4:]]
        return Response(data, media_type=media_type, headers=_NO_CACHE if media_type == "video/mp4" else _MEDIA_CACHE)

    @staticmethod
    def _block_s(packager: HlsPackager) -> float:
        """How long a blocking request may wait: three target durations (RFC 8216bis 6.2.5.2)."""
        return 3.0 * packager.target_duration()

    @staticmethod
    async def _wait(hls: HlsSink, ready: Callable[[HlsPackager], Any], timeout_s: float) -> bool:
        """Wait until ``ready(packager)`` (re-checked on every playlist change) or ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not ready(hls.packager):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(hls.changed(), remaining)
            except TimeoutError:
                return bool(ready(hls.packager))
        return True
