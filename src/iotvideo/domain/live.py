"""Live sessions: ``QueryLiveStreaming`` / ``StopLiveStreaming`` end to end, and who may publish or play.

One *stream* is a device's ``StreamType`` (0 main, 1 sub); its hub key is
``StreamKey(iot_id, stream_type)`` and its name in URLs is ``{iot_id}_{stream_type}``.

``LiveSessions.start`` (one ``QueryLiveStreaming``):

* checks the device is online (the seed's 466 errors, synchronously);
* makes sure the stream's hub exists and keeps it from going idle for a moment;
* if no push is running, issues a push token (kind ``push``, subject ``{iot_id}/{stream_type}``,
  single use, 60 s) and calls the device's ``StartPushStreaming`` with
  ``rtmp://{public_host}:{rtmp_port}/live/{name}?token=…`` as a background task — the API answers
  at once, without waiting for the device or the first frame; a push the device refuses is
  logged and forgotten, and the next request (or player) starts another;
* otherwise reuses the running push (several players share one push), asking the device for a key
  frame when ``ForceIFrame`` is set;
* issues a play token (kind ``play``, subject the stream name, valid ``UrlValidDuration`` s, single
  use unless ``PlayUnLimited``, carrying ``CacheDuration``) and answers the URL for the scheme.

``CacheDuration`` (ms): an RTMP or HTTP-FLV player starts on the latest key frame at least that
far behind the live edge (as far as the hub's cache reaches; 0: the current GOP). The hub is told
to keep that much history when the URL is issued, so the history is there when the player comes.

Encryption (``ShouldEncrypt``): the stream gets an AES-128 key and IV, sent to the device
(``EncryptType`` 1, ``Key``/``Iv`` base64) and returned as the decrypt key JSON. The key belongs to
the push: players of an encrypted push share it. A request whose encryption differs from the
running push restarts the push in the requested mode (the newest authorized publisher replaces
the old one; players already attached continue on the new source).

Idle: the media registry's ``on_idle`` fires when a stream has had no players (RTMP/FLV
subscribers; HLS requests touch the hub) for ``settings.media_idle_s``; the device is told to
stop and the hub is removed. A player arriving later with a still-valid token restarts the push
(the stream is remembered, with its key, until ``StopLiveStreaming``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Final

from iotvideo.config import Settings
from iotvideo.devicelink.link import DeviceLink, Target
from iotvideo.errors import BusinessError
from iotvideo.media.auth import MediaAuthError, PlayGrant, cache_ms_of, split_name
from iotvideo.media.hub import HubKey, HubRegistry, StreamHub, StreamKey
from iotvideo.media.tokens import TokenClaims, TokenError, TokenSigner
from iotvideo.secretbox import load_master_key

__all__ = ["SCHEMES", "LiveAuthorizer", "LiveSessions", "LiveStart", "media_token_signer", "parse_stream_name",
           "stream_name"]

log = logging.getLogger("iotvideo.live")

SCHEMES: Final = ("rtmp", "flv", "hls")
RTMP_APP: Final = "live"
PUSH_TOKEN_TTL_S: Final = 60.0
MIN_URL_VALID_S: Final = 10
MAX_URL_VALID_S: Final = 14400
# While a freshly issued URL may still be opened, an unwatched stream is not stopped for longer
# than this (a player arriving later restarts the push itself).
HOLD_MAX_S: Final = 60.0


def stream_name(iot_id: str, stream_type: int) -> str:
    return f"{iot_id}_{stream_type}"


def parse_stream_name(name: str) -> StreamKey | None:
    iot_id, sep, st = name.rpartition("_")
    if not sep or not iot_id or st not in ("0", "1"):
        return None
    return StreamKey(iot_id, int(st))


@dataclass(frozen=True, slots=True)
class LiveStart:
    path: str
    decrypt_key: str  # the decrypt key JSON, or "" for a clear stream


@dataclass(slots=True)
class _Stream:
    """What the cloud knows of one live stream (kept until StopLiveStreaming)."""

    key: StreamKey
    target: Target
    tenant_id: str
    cipher: tuple[bytes, bytes] | None = None  # (key, iv) of the current push
    push_url: str = ""
    task: asyncio.Task[None] | None = None  # the StartPushStreaming call
    ok: bool = False  # the device said it is pushing
    hold_until: float = 0.0  # monotonic: do not stop for idleness before this
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def decrypt_json(self) -> str:
        if self.cipher is None:
            return ""
        k, iv = self.cipher
        return json.dumps({"Key": base64.b64encode(k).decode(), "Iv": base64.b64encode(iv).decode(),
                           "Algorithm": "AES-128-CBC", "EncryptType": 0}, separators=(",", ":"))


def media_token_signer(settings: Settings) -> TokenSigner:
    """The node's signer for push and play tokens, its key derived from the master key
    (tokens survive a restart; rotate the master key to invalidate them all)."""
    master = load_master_key(settings.data_dir, settings.master_key)
    return TokenSigner(hmac.new(master, b"iotvideo media tokens v1", hashlib.sha256).digest())


class LiveSessions:
    """Live sessions of one server (see the module docstring)."""

    def __init__(self, settings: Settings, link: DeviceLink, registry: HubRegistry, signer: TokenSigner,
                 *, ports: dict[str, int] | None = None) -> None:
        self.settings = settings
        self.link = link
        self.registry = registry
        self.signer = signer
        self.ports = ports if ports is not None else {}
        self._streams: dict[str, _Stream] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # chain onto the registry's idle hook
        previous = registry.on_idle

        def on_idle(hub: StreamHub) -> None:
            if previous is not None:
                previous(hub)
            self._on_idle(hub)

        registry.on_idle = on_idle

    # --- addresses ---------------------------------------------------------------------------

    @property
    def host(self) -> str:
        s = self.settings
        return getattr(s, "public_host", None) or s.host

    @property
    def rtmp_port(self) -> int:
        return self.ports.get("rtmp") or self.settings.rtmp_port

    def play_url(self, scheme: str, name: str, token: str) -> str:
        h, http_port = self.host, self.settings.http_port
        if scheme == "flv":
            return f"http://{h}:{http_port}/live/{name}.flv?token={token}"
        if scheme == "hls":
            return f"http://{h}:{http_port}/hls/{name}/index.m3u8?token={token}"
        return f"rtmp://{h}:{self.rtmp_port}/{RTMP_APP}/{name}?token={token}"

    # --- API ---------------------------------------------------------------------------------

    async def start(self, tenant_id: str, target: Target, stream_type: int, scheme: str = "rtmp",
                    url_valid_s: int = MIN_URL_VALID_S, play_unlimited: bool = False, encrypt: bool = False,
                    force_iframe: bool = False, cache_ms: int = 0) -> LiveStart:
        """Answer a play URL at once; the device is told to push in the background (module docstring)."""
        if scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r}")
        url_valid_s = max(MIN_URL_VALID_S, min(MAX_URL_VALID_S, int(url_valid_s)))
        await self.link._require_online(target)  # the seed's 466 errors, synchronously
        key = StreamKey(target.iot_id, stream_type)
        name = stream_name(target.iot_id, stream_type)
        stream = self._streams.get(str(key))
        if stream is None or stream.target != target:
            stream = self._streams[str(key)] = _Stream(key, target, tenant_id)
        async with stream.lock:
            hub = self.registry.get_or_create(key)
            hub.touch()
            if cache_ms:
                hub.keep_history(cache_ms)
            if scheme == "hls" and hub.hls is None:  # packaging starts now, not at the first playlist request
                hub.enable_hls()
            stream.hold_until = max(stream.hold_until, time.monotonic() + min(url_valid_s, HOLD_MAX_S))
            if encrypt and stream.cipher is None:
                stream.cipher = (os.urandom(16), os.urandom(16))
                self._start_push(stream)
            elif not encrypt and stream.cipher is not None:
                stream.cipher = None
                self._start_push(stream)
            elif not self._running(stream):
                self._start_push(stream)
            elif force_iframe:
                self._spawn(self._quiet_call(target, "ForceIFrame", {"StreamType": stream_type}))
            decrypt = stream.decrypt_json
        token = self.signer.issue("play", name, url_valid_s, single_use=not play_unlimited,
                                  extra={"c": cache_ms} if cache_ms else None)
        log.info("live session iot_id=%s stream=%d scheme=%s encrypt=%s", target.iot_id, stream_type, scheme,
                 bool(decrypt))
        return LiveStart(self.play_url(scheme, name, token), decrypt)

    async def stop(self, tenant_id: str, target: Target, stream_type: int) -> None:
        """Stop the device's push and end the stream for every player (StopLiveStreaming)."""
        key = StreamKey(target.iot_id, stream_type)
        stream = self._streams.pop(str(key), None)
        if stream is not None and stream.task is not None and not stream.task.done():
            stream.task.cancel()
        self.registry.remove(key)
        await self.link.call(target, "StopPushStreaming", {"StreamType": stream_type}, wait=False)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- pushes ------------------------------------------------------------------------------

    def _running(self, stream: _Stream) -> bool:
        """A push was started and is still going (the call pending, or the device publishing)."""
        if stream.task is None:
            return False
        if not stream.task.done():
            return True
        hub = self.registry.get(stream.key)
        return stream.ok and hub is not None and hub.publishing

    def _start_push(self, stream: _Stream) -> None:
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
        key = stream.key
        token = self.signer.issue("push", str(key), PUSH_TOKEN_TTL_S)
        url = f"rtmp://{self.host}:{self.rtmp_port}/{RTMP_APP}/{stream_name(key.iot_id, key.stream_type)}?token={token}"
        args: dict[str, Any] = {"PushUrl": url, "StreamType": key.stream_type, "ForceIFrame": 1}
        if stream.cipher is not None:
            k, iv = stream.cipher
            args.update(EncryptType=1, Key=base64.b64encode(k).decode(), Iv=base64.b64encode(iv).decode())
        stream.push_url, stream.ok = url, False
        stream.task = self._spawn(self._push(stream, args))

    async def _push(self, stream: _Stream, args: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        try:
            result = await self.link.call(stream.target, "StartPushStreaming", args, wait=True,
                                          timeout=max(self.settings.rpc_timeout_s, 8.0))
        except BusinessError as e:
            log.warning("StartPushStreaming iot_id=%s stream=%d failed: %s %s", stream.key.iot_id,
                        stream.key.stream_type, e.code, e.message)
            return
        if result.code != 200:
            log.warning("StartPushStreaming iot_id=%s stream=%d refused: %s %s", stream.key.iot_id,
                        stream.key.stream_type, result.code, result.message)
            return
        stream.ok = True
        log.info("device pushing iot_id=%s stream=%d after %.0f ms", stream.key.iot_id, stream.key.stream_type,
                 (time.perf_counter() - t0) * 1000)

    async def _quiet_call(self, target: Target, identifier: str, args: dict[str, Any]) -> None:
        try:
            await self.link.call(target, identifier, args, wait=False)
        except BusinessError as e:
            log.info("%s iot_id=%s: %s %s", identifier, target.iot_id, e.code, e.message)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _on_idle(self, hub: StreamHub) -> None:
        stream = self._streams.get(hub.path)
        if stream is None:
            return
        if time.monotonic() < stream.hold_until:
            hub.touch()  # a URL just issued may still be opened: look again one idle period later
            return
        log.info("live stream %s idle for %.0f s: stopping the push", hub.path, self.settings.media_idle_s)
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
        stream.task, stream.ok = None, False
        self.registry.remove(hub.key)
        self._spawn(self._quiet_call(stream.target, "StopPushStreaming",
                                     {"StreamType": stream.key.stream_type, "PushUrl": stream.push_url}))

    async def ensure_push(self, key: StreamKey) -> None:
        """A player arrived with a valid token: restart the push if it stopped (idle, device restart)."""
        stream = self._streams.get(str(key))
        if stream is None:
            return
        async with stream.lock:
            if not self._running(stream):
                try:
                    await self.link._require_online(stream.target)
                except BusinessError as e:
                    raise MediaAuthError(f"the device is not online ({e.message})", MediaAuthError.NOT_FOUND) from None
                self._start_push(stream)


class LiveAuthorizer:
    """The ``MediaAuthorizer`` of a server: publish with a push token for exactly that stream,
    play with a play token for that stream name (HLS: the first playlist request; its playback
    session covers the rest). Names are ``{iot_id}_{stream_type}``; the hub key is the
    ``StreamKey``. A player of a stream whose push stopped restarts it (``LiveSessions.ensure_push``)."""

    def __init__(self, signer: TokenSigner, live: LiveSessions | None = None) -> None:
        self.signer = signer
        self.live = live

    async def authorize_publish(self, app: str, name_with_query: str, peer: str) -> HubKey:
        if app != RTMP_APP:
            raise MediaAuthError(f"unknown application {app!r}", MediaAuthError.NOT_FOUND)
        return (await self._check("push", name_with_query, subject=lambda k, _n: str(k)))[0]

    async def authorize_play(self, app: str, name_with_query: str, peer: str) -> PlayGrant:
        if app not in (RTMP_APP, "hls"):
            raise MediaAuthError(f"unknown application {app!r}", MediaAuthError.NOT_FOUND)
        key, claims = await self._check("play", name_with_query, subject=lambda _k, n: n)
        if self.live is not None:
            await self.live.ensure_push(key)
        return PlayGrant(key, cache_ms_of(claims.extra))

    async def _check(self, kind: Any, name_with_query: str, subject: Any) -> tuple[StreamKey, TokenClaims]:
        name, params = split_name(name_with_query)
        key = parse_stream_name(name)
        if key is None:
            raise MediaAuthError("unknown stream", MediaAuthError.NOT_FOUND)
        token = params.get("token")
        if not token:
            raise MediaAuthError("a token is required")
        try:
            claims = await self.signer.verify_async(token, kind, subject=subject(key, name))
        except TokenError as e:
            raise MediaAuthError(f"token refused: {e.reason}") from None
        return key, claims
