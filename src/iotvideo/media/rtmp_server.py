"""The RTMP server over asyncio: publishers feed hubs, players read them, one ``RtmpServerConnection`` per socket.

It knows the hub registry and an authorizer, nothing else. Events are handled in order;
while a publish or play request is being authorized the socket is not read (so nothing
piles up) and later events wait. A connection that breaks the protocol, sends a codec we
cannot relay, or goes quiet is closed on its own; other streams never notice. A player is
paused while its socket's write buffer is above the high mark; the hub's bounded queue
then drops to the next key frame for it, never stalling the publisher.

Fan-out is cheap: a player that keeps up is written to directly from the publisher's
``publish`` (``Subscription.deliver_to``: no queue, no task switch), and each frame's RTMP
message is built once for all its players (``FrameMemo`` of a ``SharedMessage``): a player
adds only its own first chunk header, and players whose header is the same share even that.
A published tag that is exactly what ``flvtags`` would build from its frame is that message
as it came (``parse_video_tag``): nothing is rebuilt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, cast

from . import accel, flvtags
from .auth import MediaAuthError, MediaAuthorizer, PlayGrant, play_grant
from .frames import Codec, MediaFrame
from .hub import (
    FrameMemo,
    HubClosed,
    HubKey,
    HubRegistry,
    HubStats,
    Publisher,
    PublisherConflict,
    StreamHub,
    Subscription,
)
from .rtmp import (
    ConnectionClosed,
    ConnectRequest,
    DeleteStream,
    Event,
    MediaData,
    PlayRequest,
    ProtocolError,
    PublishRequest,
    RtmpServerConnection,
    RtmpUsageError,
    SharedMessage,
    shared_audio,
    shared_video,
)
from .rtmp.connection import plain_socket_fd

__all__ = ["RtmpConnectionStats", "RtmpLimits", "RtmpServer"]

log = logging.getLogger("iotvideo.media.rtmp")

# the per-tag path (``_RtmpPeer._media``): accel's choice, looked up once
_parse_video: Final = accel.parse_video_tag
_parse_audio: Final = accel.parse_audio_tag

_FLV_VIDEO_IDS: Final = {Codec.H264: 7, Codec.H265: 12}
_FLV_AUDIO_IDS: Final = {Codec.AAC: 10, Codec.PCMA: 7, Codec.PCMU: 8}


@dataclass(frozen=True, slots=True)
class RtmpLimits:
    """Timeouts in seconds, buffer sizes in bytes."""

    handshake_timeout_s: float = 10.0  # from accept until ``connect`` is answered
    idle_timeout_s: float = 30.0  # nothing received for this long closes (players are pinged at half)
    auth_timeout_s: float = 10.0  # the authorizer's answer to publish or play
    write_buffer_high: int = 1 << 20  # a player waits while its socket holds more than this
    write_buffer_low: int = 256 << 10
    max_connections: int = 10_000
    chunk_size: int = 4096  # what we send with


@dataclass(slots=True)
class RtmpConnectionStats:
    """Counters of one connection; ``RtmpServer.stats()`` returns snapshots."""

    id: int
    peer: str
    started_at: float  # Unix seconds
    app: str = ""
    role: str = ""  # "publisher", "player", or "" before a stream is accepted
    stream: str = ""  # the hub's path
    bytes_in: int = 0
    bytes_out: int = 0
    frames_in: int = 0
    frames_out: int = 0
    bad_tags: int = 0  # published tags dropped as malformed
    dropped_out: int = 0  # frames skipped for a player that fell behind
    closed_reason: str = ""


def _message(frame: MediaFrame) -> SharedMessage | None:
    """The frame's RTMP message, for every player; None for a frame FLV cannot carry (e.g. G.711 at an odd rate)."""
    try:
        if frame.codec is Codec.H264 or frame.codec is Codec.H265:
            return shared_video(flvtags.video_payload(frame))
        return shared_audio(flvtags.audio_payload(frame))
    except flvtags.FlvError:
        return None


def _metadata(stats: HubStats) -> dict[str, Any]:
    """onMetaData for a player, from what the hub knows of the stream."""
    meta: dict[str, Any] = {}
    if stats.width and stats.height:
        meta["width"], meta["height"] = float(stats.width), float(stats.height)
    video_id = _FLV_VIDEO_IDS.get(stats.video_codec) if stats.video_codec is not None else None
    audio_id = _FLV_AUDIO_IDS.get(stats.audio_codec) if stats.audio_codec is not None else None
    if video_id is not None:
        meta["videocodecid"] = float(video_id)
    if audio_id is not None:
        meta["audiocodecid"] = float(audio_id)
    if stats.sample_rate:
        meta["audiosamplerate"] = float(stats.sample_rate)
    return meta


class _RtmpPeer(asyncio.Protocol):
    """One TCP connection: drives its ``RtmpServerConnection`` and the hub publishers/subscriptions it holds."""

    def __init__(self, server: RtmpServer, conn_id: int) -> None:
        self.server = server
        self.limits = server.limits
        self.conn = RtmpServerConnection(chunk_size=server.limits.chunk_size)
        self.stats = RtmpConnectionStats(conn_id, "", time.time())
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self._loop = asyncio.get_running_loop()
        self._time = self._loop.time
        self.opened_at = self.last_rx = self.last_ping = self._loop.time()
        self.connected = False  # ``connect`` answered
        self.closing = False
        self._events: deque[Event] = deque()
        self._busy: asyncio.Task[None] | None = None  # an authorization in flight: later events wait
        self._publishers: dict[int, Publisher] = {}
        self._players: dict[int, tuple[Subscription, asyncio.Task[None]]] = {}
        self._outs: dict[int, Any] = {}  # C direct outputs (``accel.RtmpOut``) of the players, by stream id
        # the publishing streams' media in C (``accel.PublishLane``, when built); while the connection
        # is in the steady state the lane is armed: it reads the socket itself (``_lane_arm``)
        self._lane = self.conn.publish_lane(server.messages, self._frame, self._media)
        self._armed = False
        self._lane_fd = -1  # the armed lane's own descriptor of the socket (it reads and closes it), or -1
        self._lane_poll: Any = None  # the server's ``accel.LanePoll`` that has it (None: a reader of the loop's own)
        self._lane_rx = 0  # the lane's bytes_in when the sweep last looked (``rx_check``)
        self._writable = asyncio.Event()
        self._writable.set()
        self._paused = False  # the socket's write buffer is above the high mark

    # --- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.stats.peer = self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if len(self.server._peers) >= self.limits.max_connections:
            log.warning("rtmp: refusing %s: %d connections open", self.peer, len(self.server._peers))
            self.closing = True
            transport.abort()
            return
        transport.set_write_buffer_limits(self.limits.write_buffer_high, self.limits.write_buffer_low)
        self.server._peers.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_rx = self._time()
        self.stats.bytes_in += len(data)
        if self.closing:
            return
        conn = self.conn
        if self._events or self._busy is not None:
            self._events.extend(conn.receive_data(data))
        else:  # the steady state: media go straight to ``_media``, no event per message (the armed lane does this in C)
            events = conn.receive_media(data, self._media)
            if not events or self.closing:  # (closed by a tag: what followed it is dropped, as ``shutdown`` does)
                if conn.bytes_to_send:  # what ``_advance`` ends with (an acknowledgement, say)
                    self.flush()
                return
            self._events.extend(events)
        self._advance()

    def eof_received(self) -> bool | None:
        self.shutdown("peer closed")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.shutdown(f"connection lost: {exc}" if exc else "peer closed")
        self.server._peers.discard(self)

    def pause_writing(self) -> None:
        self._paused = True
        self._writable.clear()
        for out in self._outs.values():
            out.paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._writable.set()
        for out in self._outs.values():
            out.paused = False

    # --- event handling ----------------------------------------------------------------

    def _advance(self) -> None:
        """Handle queued events until one needs to wait, then send what they produced."""
        try:
            while self._events and self._busy is None and not self.closing:
                self._handle(self._events.popleft())
        except Exception:
            log.exception("rtmp %s: failed handling an event", self.peer)
            self.close("internal error", abort=True)
            return
        self.flush()
        self._lane_arm()

    # --- the lane (C) receiving on its own ---------------------------------------------

    def _lane_arm(self, *, hold: bool = False) -> None:
        """Arm the lane while the connection is in the steady state (publishing; nothing queued,
        awaited or closing), disarm it otherwise. Armed, the lane reads the socket itself: the
        transport's reading is paused and ``lane.readable`` is called for the lane's own
        descriptor of the socket (``set_fd`` duplicates it, ``set_fd(-1)`` closes it; no ``bytes``
        object and no protocol call per read), by the server's ``LanePoll`` (one loop callback for
        all ready lanes) or, without one, by the loop (a reader per lane). Without a plain socket
        (TLS, a test's transport) the lane becomes the transport's protocol instead (its C
        ``data_received``; the other callbacks it hands to this one). Either way what it cannot
        handle comes back through ``_lane_wake``. ``hold``: disarm whatever the state."""
        lane = self._lane
        transport = self.transport
        if lane is None or transport is None:
            return
        window = None
        if not hold and len(lane) and not self.closing and not self._events and self._busy is None:
            window = self.conn.lane_window()
        if window is not None:
            lane.arm(window, self._lane_wake, self)
            if not self._armed:
                self._armed = True
                fd = self._lane_fd = lane.set_fd(plain_socket_fd(transport))  # (the lane's own descriptor)
                if fd >= 0:
                    transport.pause_reading()
                    poll = self.server._poll
                    if poll is not None:
                        poll.add(fd, lane)
                        self._lane_poll = poll
                    else:
                        self._loop.add_reader(fd, lane.readable)
                else:
                    transport.set_protocol(lane)
        elif self._armed:
            self._armed = False
            fd, self._lane_fd = self._lane_fd, -1
            if fd >= 0:
                poll, self._lane_poll = self._lane_poll, None
                if poll is not None:
                    poll.discard(fd)  # (before the lane closes it: the descriptor number may be reused at once)
                else:
                    self._loop.remove_reader(fd)
                lane.set_fd(-1)
            unsynced = lane.take_unsynced()
            if unsynced and not self.closing:  # (its acknowledgement; with no message left, no event)
                self.conn.lane_received(unsynced, (), None, self._media)
                self.flush()
            if not transport.is_closing():
                if fd < 0:
                    transport.set_protocol(self)
                elif self._busy is None:  # (an authorization in flight keeps reading paused)
                    transport.resume_reading()

    def _lane_wake(self, rest: list[Any] | None, error: BaseException | None) -> None:
        """The armed lane left messages, its reader raised, an acknowledgement is due, or (reading
        the socket itself) the stream ended or failed: the transport reads again and meets that."""
        lane = self._lane
        assert lane is not None
        if isinstance(error, (EOFError, OSError)) and self._lane_fd >= 0:
            self._lane_arm(hold=True)
            return
        try:
            events = self.conn.lane_received(lane.take_unsynced(), rest or (), error, self._media)
        except Exception:
            log.exception("rtmp %s: failed handling media", self.peer)
            self.close("internal error", abort=True)
            return
        if self.closing:
            return
        if events:
            self._events.extend(events)
            self._advance()
        else:
            if self.conn.bytes_to_send:
                self.flush()
            self._lane_arm()

    def rx_check(self, now: float) -> None:
        """Bring ``last_rx`` up to date with what the armed lane read (it does not tell each read)."""
        lane = self._lane
        if lane is not None and lane.bytes_in != self._lane_rx:
            self._lane_rx = lane.bytes_in
            self.last_rx = now

    def _handle(self, ev: Event) -> None:
        if isinstance(ev, MediaData):
            self._on_media(ev)
        elif isinstance(ev, ConnectRequest):
            self.connected = True
            self.stats.app = ev.app
            self._released(self.conn.accept_connect())
        elif isinstance(ev, PublishRequest):
            self._wait_for(self._publish(ev))
        elif isinstance(ev, PlayRequest):
            self._wait_for(self._play(ev))
        elif isinstance(ev, DeleteStream):
            self._stop_stream(ev.stream_id)
        elif isinstance(ev, ProtocolError):
            self.close(f"protocol error: {ev.reason}", abort=True)
        elif isinstance(ev, ConnectionClosed):
            self.close("peer closed")
        # CreateStream is answered by the connection; Metadata is not relayed (players get ours).

    def _released(self, events: list[Event]) -> None:
        """Events of messages held while an answer was awaited: they come before anything queued."""
        self._events.extendleft(reversed(events))

    def _wait_for(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self.transport is not None
        self.transport.pause_reading()
        self._busy = self._loop.create_task(self._run_blocking(coro))

    async def _run_blocking(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except Exception:
            log.exception("rtmp %s: request failed", self.peer)
            self.close("internal error", abort=True)
        finally:
            self._busy = None
        if not self.closing and self.transport is not None:
            self.transport.resume_reading()
            self._advance()

    async def _authorize(
        self, call: Callable[[str, str, str], Coroutine[Any, Any, HubKey | PlayGrant]], name: str
    ) -> HubKey | PlayGrant:
        try:
            return await asyncio.wait_for(call(self.conn.app, name, self.peer), self.limits.auth_timeout_s)
        except TimeoutError:
            raise MediaAuthError("authorization timed out", MediaAuthError.UNAVAILABLE) from None

    def _refuse(self, what: str, reason: str) -> None:
        log.info("rtmp %s: %s refused: %s", self.peer, what, reason)
        self.close(f"{what} refused: {reason}")

    # --- publishing --------------------------------------------------------------------

    async def _publish(self, ev: PublishRequest) -> None:
        sid = ev.stream_id
        code = "NetStream.Publish.BadName"
        try:
            key = play_grant(await self._authorize(self.server.authorizer.authorize_publish, ev.name)).key
            hub = self.server.registry.get_or_create(key)
            publisher = hub.attach_publisher(on_evicted=lambda: self.close("replaced by another publisher"))
        except MediaAuthError as e:
            reason = e.reason
            if e.code != MediaAuthError.NOT_FOUND:
                code = "NetStream.Publish.Denied"
        except PublisherConflict:
            reason = "the stream is already being published"
        except HubClosed:
            reason = "the stream is closed"
        else:
            if self.closing:
                publisher.close()
                return
            self._publishers[sid] = publisher
            if self._lane is not None:
                self._lane.add(sid, publisher, hub._core)
            self.stats.role, self.stats.stream = "publisher", hub.path
            log.info("rtmp %s: publishing %s", self.peer, hub.path)
            self._released(self.conn.accept_publish(sid))
            return
        if not self.closing:
            self.conn.reject_publish(sid, reason, code)
            self._refuse("publish", reason)

    def _on_media(self, ev: MediaData) -> None:
        self._media(ev.stream_id, ev.kind == "video", ev.timestamp, ev.payload)

    def _media(self, stream_id: int, video: bool, timestamp: int, payload: bytes) -> None:
        """One published audio or video tag: parsed, counted, handed to the stream's hub."""
        publisher = self._publishers.get(stream_id)
        if publisher is None or self.closing:
            return
        try:
            try:
                frame, as_built = (_parse_video if video else _parse_audio)(payload, timestamp)
            except flvtags.UnsupportedCodec as e:
                self.close(f"unsupported codec: {e}")
                return
            except flvtags.FlvError:
                self.stats.bad_tags += 1
                return
            if frame is not None:
                self.stats.frames_in += 1
                if as_built and publisher.hub._subs:  # players get the tag as it came: nothing to rebuild
                    self.server.messages.put(frame, shared_video(payload) if video else shared_audio(payload))
                publisher.publish(frame)
        except Exception:  # as ``_advance`` does for an event (this runs inside ``receive_media`` too)
            log.exception("rtmp %s: failed handling an event", self.peer)
            self.close("internal error", abort=True)

    def _frame(self, stream_id: int, frame: MediaFrame, msg: SharedMessage | None) -> None:
        """A frame the lane parsed (and counted) that its hub's C core did not take; ``msg`` is the
        tag as it came (None: players need it rebuilt)."""
        publisher = self._publishers.get(stream_id)
        if publisher is None or self.closing:
            return
        try:
            if msg is not None and publisher.hub._subs:
                self.server.messages.put(frame, msg)
            publisher.publish(frame)
        except Exception:
            log.exception("rtmp %s: failed handling an event", self.peer)
            self.close("internal error", abort=True)

    # --- playing -----------------------------------------------------------------------

    async def _play(self, ev: PlayRequest) -> None:
        sid = ev.stream_id
        code = "NetStream.Play.Failed"
        hub: StreamHub | None = None
        try:
            grant = play_grant(await self._authorize(self.server.authorizer.authorize_play, ev.name))
            hub = self.server.registry.get_or_create(grant.key)
            sub = hub.subscribe(preroll_s=grant.cache_ms / 1000)
        except MediaAuthError as e:
            reason = e.reason
            if e.code == MediaAuthError.NOT_FOUND:
                code = "NetStream.Play.StreamNotFound"
        except HubClosed:
            reason = "the stream is closed"
        else:
            if self.closing:
                sub.close()
                return
            self.conn.accept_play(sid)
            meta = _metadata(hub.stats())
            if meta:
                self.conn.send_metadata(sid, meta)
            self.stats.role, self.stats.stream = "player", hub.path
            task = self._loop.create_task(self._feed_player(sid, sub))
            self._players[sid] = (sub, task)
            return
        if not self.closing:
            self.conn.reject_play(sid, reason, code)
            self._refuse("play", reason)

    async def _feed_player(self, sid: int, sub: Subscription) -> None:
        """Copy the subscription's frames to the player, codec headers first, while its socket keeps up.

        Frames go straight from the publisher to the socket while the player keeps up; this
        task drains what queued meanwhile (a full socket, a burst at start) and ends the play."""
        conn = self.conn
        timeline = accel.Timeline()
        message = self.server.messages
        stats = self.stats
        assert self.transport is not None
        out = conn.direct_output(sid, self.transport, timeline, message)  # C, when built

        def send(f: MediaFrame) -> None:
            msg = message(f)
            if msg is not None:
                conn.send_shared(sid, timeline.at(f), msg)
                stats.frames_out += 1

        def take(f: MediaFrame) -> bool:
            if self._paused or self.closing:
                return False
            msg = message(f)
            if msg is not None:
                self._write(conn.shared_now(sid, timeline.at(f), msg))
                stats.frames_out += 1
            return True

        if out is not None:
            out.paused, out.closing = self._paused, self.closing
            self._outs[sid] = out
        sub.deliver_to(take if out is None else out)
        try:
            while True:
                frames = await sub.batch()
                if not frames or self.closing:
                    break
                for f in frames:
                    send(f)
                self.flush()
                if self._paused:
                    await self._writable.wait()
            if not self.closing and conn.stream_state(sid) == "playing":
                conn.end_play(sid)
                self.flush()
        except RtmpUsageError:
            pass
        finally:
            sub.deliver_to(None)
            if out is not None:
                out.closing = True
                if self._outs.get(sid) is out:
                    del self._outs[sid]
                stats.frames_out += out.frames_out
                stats.bytes_out += out.bytes_out
            self.stats.dropped_out += sub.dropped_frames
            sub.close()
            entry = self._players.get(sid)
            if entry is not None and entry[0] is sub:
                del self._players[sid]

    def _stop_stream(self, sid: int) -> None:
        publisher = self._publishers.pop(sid, None)
        if publisher is not None:
            if self._lane is not None:
                self._lane.discard(sid)
            publisher.close()
        player = self._players.pop(sid, None)
        if player is not None:
            sub, task = player
            sub.close()
            task.cancel()

    # --- output and closing ------------------------------------------------------------

    def flush(self) -> None:
        self._write(self.conn.data_to_send())

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if data and transport is not None and not transport.is_closing():
            self.stats.bytes_out += len(data)
            transport.write(data)
            for out in self._outs.values():  # (they ask the transport again before their next direct send)
                out.known_empty = False

    def ping(self, now: float) -> None:
        self.last_ping = now
        self.conn.send_ping(int(now * 1000) & 0xFFFF_FFFF)
        self.flush()

    def close(self, reason: str, *, abort: bool = False) -> None:
        """Close this connection (after sending what is queued, unless ``abort``)."""
        if self.closing:
            return
        if reason.startswith(("protocol error", "unsupported codec", "internal error")):
            log.warning("rtmp %s: closing: %s", self.peer, reason)
        self.flush()
        self.shutdown(reason)
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    def shutdown(self, reason: str) -> None:
        """Leave every hub: publishers close (their players end), subscriptions close."""
        if not self.stats.closed_reason:
            self.stats.closed_reason = reason
        self.closing = True
        for out in self._outs.values():
            out.closing = True
        self._events.clear()
        self._lane_arm()  # (disarms)
        for sid in list(self._publishers) + list(self._players):
            self._stop_stream(sid)
        if self._busy is not None:
            self._busy.cancel()
        self._writable.set()

    def snapshot(self) -> RtmpConnectionStats:
        stats = dataclasses.replace(self.stats)
        if self._lane is not None:
            stats.frames_in += self._lane.frames_in
            stats.bytes_in += self._lane.bytes_in
        stats.dropped_out += sum(sub.dropped_frames for sub, _ in self._players.values())
        stats.frames_out += sum(out.frames_out for out in self._outs.values())
        stats.bytes_out += sum(out.bytes_out for out in self._outs.values())
        return stats


class RtmpServer:
    """Accepts RTMP publishers and players for the hubs of ``registry``, as ``authorizer`` allows."""

    def __init__(self, registry: HubRegistry, authorizer: MediaAuthorizer, limits: RtmpLimits | None = None) -> None:
        self.registry = registry
        self.authorizer = authorizer
        self.limits = limits or RtmpLimits()
        self._peers: set[_RtmpPeer] = set()
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self.messages: FrameMemo[SharedMessage | None] = FrameMemo(_message)  # each frame's message, for all players
        self._poll: Any = None  # the armed lanes' ``accel.LanePoll`` while listening (None: not built, or not Linux)
        self._poll_loop: asyncio.AbstractEventLoop | None = None  # the loop that watches it

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: any free port); return the port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _RtmpPeer(self, next(self._ids)), host, port, reuse_address=True)
        if accel.LanePoll is not None and self._poll is None:
            self._poll = accel.LanePoll(self._lane_failed)
            loop.add_reader(self._poll.fileno(), self._poll.run)
            self._poll_loop = loop
        self._housekeeping = loop.create_task(self._sweep())
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        if self._server is not None:
            self._server.close()
        for peer in list(self._peers):
            peer.close("server shutting down")
        poll, self._poll = self._poll, None
        if poll is not None:  # (every lane has left it: their peers are closed)
            if self._poll_loop is not None:
                self._poll_loop.remove_reader(poll.fileno())
            poll.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    @property
    def connections(self) -> int:
        return len(self._peers)

    def stats(self) -> list[RtmpConnectionStats]:
        """A snapshot of every open connection."""
        return [peer.snapshot() for peer in self._peers]

    def _lane_failed(self, lane: Any, exc: BaseException) -> None:
        """A lane's ``readable`` raised in the ``LanePoll``: its connection closes as an internal error
        (as ``_advance`` does; a reader callback's exception would otherwise only be logged by the
        loop, and the lane's descriptor, still readable, would fail again at once)."""
        peer = next((p for p in self._peers if p._lane is lane), None)
        log.error("rtmp %s: failed reading", peer.peer if peer is not None else "?", exc_info=exc)
        if peer is not None:
            peer.close("internal error", abort=True)  # (its lane leaves the poll)

    async def _sweep(self, interval_s: float = 1.0) -> None:
        """Close connections stuck in the handshake or silent too long; ping quiet players."""
        loop = asyncio.get_running_loop()
        limits = self.limits
        while True:
            await asyncio.sleep(interval_s)
            now = loop.time()
            for peer in list(self._peers):
                try:
                    if peer.closing:
                        continue
                    peer.rx_check(now)
                    if not peer.connected and now - peer.opened_at > limits.handshake_timeout_s:
                        peer.close("handshake timeout", abort=True)
                    elif now - peer.last_rx > limits.idle_timeout_s:
                        peer.close("idle timeout", abort=True)
                    elif peer.connected and now - max(peer.last_rx, peer.last_ping) > limits.idle_timeout_s / 2:
                        peer.ping(now)
                except Exception:
                    log.exception("rtmp %s: housekeeping failed", peer.peer)
