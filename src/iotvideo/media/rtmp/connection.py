"""Sans-IO RTMP connections: ``RtmpServerConnection`` (ingest and play) and ``RtmpClientConnection`` (push and pull).

Both take bytes with ``receive_data`` and return typed events; everything they want to send
is collected for ``data_to_send``. ``receive_data(b"")`` means the peer closed. Malformed
input never raises: it ends in a ``ProtocolError`` event, after which the connection is
``closed`` and ignores further input; the owner flushes ``data_to_send`` and closes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from . import amf0
from .amf0 import UNDEFINED, AmfError, EcmaArray
from .. import accel
from .chunk import DEFAULT_MAX_MESSAGE_SIZE, ChunkError, RawMessage, SharedMessage
from .handshake import ClientHandshake, HandshakeError, ServerHandshake
from .messages import (
    Acknowledgement,
    CommandMessage,
    DataMessage,
    MessageError,
    MessageType,
    SetChunkSize,
    SetPeerBandwidth,
    UserControl,
    UserControlEvent,
    VideoMessage,
    WindowAckSize,
    parse_message,
    split_aggregate,
)

__all__ = [
    "ConnectRejected",
    "ConnectRequest",
    "Connected",
    "ConnectionClosed",
    "CreateStream",
    "DeleteStream",
    "Event",
    "MediaData",
    "Metadata",
    "PlayRequest",
    "ProtocolError",
    "PublishRequest",
    "RtmpClientConnection",
    "RtmpServerConnection",
    "RtmpUsageError",
    "StreamCreated",
    "StreamStatus",
    "shared_audio",
    "shared_video",
]

CSID_CONTROL: Final = 2
CSID_COMMAND: Final = 3
CSID_AUDIO: Final = 4
CSID_STREAM: Final = 5  # onStatus, metadata and other per-stream commands/data
CSID_VIDEO: Final = 6
DEFAULT_WINDOW: Final = 2_500_000
HELD_BYTES_SLACK: Final = 1024 * 1024  # held beyond one maximal message while an answer is awaited
_AUDIO: Final = MessageType.AUDIO
_VIDEO: Final = MessageType.VIDEO
MediaSink = Callable[[int, bool, int, bytes], object]  # (stream_id, is_video, timestamp, payload)
_PROTOCOL_ERRORS: Final = (HandshakeError, ChunkError, MessageError, AmfError)


# --- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """The client's ``connect``; answer with ``accept_connect()`` or ``reject_connect(reason)``."""

    app: str
    tc_url: str
    command_object: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CreateStream:
    """The client created message stream ``stream_id`` (already answered)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """``publish``: ``name`` as sent, query string included (``"cam1?token=…"``); answer with accept/reject_publish."""

    stream_id: int
    name: str
    type: str


@dataclass(frozen=True, slots=True)
class PlayRequest:
    """``play``: ``start`` is -2 (live or recorded), -1 (live only) or seconds; answer with accept/reject_play."""

    stream_id: int
    name: str
    start: float


@dataclass(frozen=True, slots=True)
class DeleteStream:
    """The client stopped publishing or playing on ``stream_id`` (deleteStream or closeStream)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class Metadata:
    """``onMetaData`` (from ``@setDataFrame`` when published, or as sent to a player)."""

    stream_id: int
    metadata: dict[str, Any]


@dataclass(slots=True, unsafe_hash=True)
class MediaData:
    """One audio or video message: an FLV tag body (see ``iotvideo.media.flvtags``).

    Treat as immutable; not ``frozen`` (like the other events) only because a frozen dataclass
    costs three times as much to build, and one is built per frame."""

    stream_id: int
    kind: Literal["audio", "video"]
    timestamp: int
    payload: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the connection."""


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The peer broke the protocol; the connection is closed."""

    reason: str


@dataclass(frozen=True, slots=True)
class Connected:
    """Client side: the server accepted ``connect``; ``info`` is its status object."""

    info: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ConnectRejected:
    """Client side: the server refused ``connect``."""

    info: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StreamCreated:
    """Client side: ``createStream`` answered with ``stream_id``."""

    transaction_id: int
    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """Client side: ``onStatus`` for a stream, e.g. code ``NetStream.Publish.Start``."""

    stream_id: int
    level: str
    code: str
    description: str
    info: dict[str, Any]


Event = (
    ConnectRequest
    | CreateStream
    | PublishRequest
    | PlayRequest
    | DeleteStream
    | Metadata
    | MediaData
    | ConnectionClosed
    | ProtocolError
    | Connected
    | ConnectRejected
    | StreamCreated
    | StreamStatus
)


class RtmpUsageError(RuntimeError):
    """The owner called a method the connection's state does not allow (a bug in the caller)."""


def shared_video(payload: bytes) -> SharedMessage:
    """A video message (an FLV video tag body) to send to many connections with ``send_shared``."""
    return accel.SharedMessage(CSID_VIDEO, _VIDEO, payload)


def shared_audio(payload: bytes) -> SharedMessage:
    """An audio message (an FLV audio tag body) to send to many connections with ``send_shared``."""
    return accel.SharedMessage(CSID_AUDIO, _AUDIO, payload)


def plain_socket_fd(transport: Any) -> int:
    """The file descriptor of the transport's socket when our bytes go on it as they are, else -1
    (no socket, or a TLS layer: its socket carries records, not our bytes)."""
    sock = transport.get_extra_info("socket")
    if sock is None or transport.get_extra_info("ssl_object") is not None:
        return -1
    try:
        return int(sock.fileno())
    except (OSError, ValueError):
        return -1


def _status(level: str, code: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"level": level, "code": code, "description": description, **extra}


def _metadata(args: tuple[Any, ...]) -> dict[str, Any] | None:
    for value in args:
        if isinstance(value, dict):
            return dict(value)
    return None


# --- shared machinery -----------------------------------------------------------------------------


class _RtmpConnection:
    """Handshake, chunking, acknowledgements, pings; subclasses handle commands, data and media."""

    def __init__(
        self,
        handshake: ServerHandshake | ClientHandshake,
        *,
        chunk_size: int,
        window_ack_size: int,
        max_message_size: int,
    ) -> None:
        if not 1 <= chunk_size <= 0xFFFFFF:
            raise ValueError(f"chunk_size {chunk_size} out of range 1..16777215")
        self._handshake: ServerHandshake | ClientHandshake | None = handshake
        self._reader = accel.ChunkReader(max_message_size=max_message_size)
        self._writer = accel.ChunkWriter()
        self._out: list[bytes] = []
        self._out_size = 0
        self._chunk_size = chunk_size
        self._window_ack_size = window_ack_size
        self._peer_window = 0  # the peer's Window Acknowledgement Size: we ack every that many bytes
        self._received = 0
        self._acked = 0
        self.peer_acknowledged = 0  # the peer's last Acknowledgement sequence number
        self.closed = False

    # I/O surface

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed bytes from the peer (``b""`` for end of stream); return the events they complete."""
        return self._receive(data, None)

    def _receive(self, data: bytes | bytearray | memoryview, on_media: MediaSink | None) -> list[Event]:
        if self.closed:
            return []
        events: list[Event] = []
        if not data:
            self.closed = True
            events.append(ConnectionClosed())
            return events
        try:
            view: bytes | bytearray | memoryview = data  # as it came: the chunk reader slices whole messages from bytes
            hs = self._handshake
            if hs is not None:
                view = memoryview(data)
                used = hs.receive_data(view)
                self._queue(hs.data_to_send())
                if not hs.done:
                    return events
                self._handshake = None
                self._handshake_done()
                view = view[used:]
                if not view:
                    return events
            self._received += len(view)
            self._dispatch(self._reader.feed(view), on_media, events)
            self._acknowledge()
        except _PROTOCOL_ERRORS as exc:
            self.closed = True
            events.append(ProtocolError(str(exc)))
        return events

    def _dispatch(self, raws: Iterable[RawMessage], on_media: MediaSink | None, events: list[Event]) -> None:
        for raw in raws:
            if (
                on_media is not None and not events  # media first in this read: they may skip the events
                and (raw.type_id == _VIDEO or raw.type_id == _AUDIO) and self._media_now(raw, on_media)
            ):
                continue
            self._on_message(raw, events)
            if self.closed:
                break

    def _media_now(self, raw: RawMessage, on_media: MediaSink) -> bool:
        """Hand an audio/video message to ``on_media`` at once (True: done with it), or not (False:
        it goes through ``_on_message``). Only a server's publishing streams do."""
        return False

    def _acknowledge(self) -> None:
        """Acknowledge what was received once the peer's window is reached."""
        if self._peer_window and self._received - self._acked >= self._peer_window:
            self._acked = self._received
            self._send_control(Acknowledgement(self._received))

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call."""
        out = b"".join(self._out)
        self._out.clear()
        self._out_size = 0
        return out

    @property
    def buffered(self) -> int:
        """Bytes held from the peer that no event has surfaced yet (bounded by the reader's limits)."""
        hs = self._handshake
        return (hs.buffered if hs is not None else 0) + self._reader.buffered + self._held()

    def _held(self) -> int:
        return 0

    @property
    def bytes_to_send(self) -> int:
        """Size of what ``data_to_send`` would return (for backpressure)."""
        return self._out_size

    # sending

    def _queue(self, data: bytes) -> None:
        if data:
            self._out.append(data)
            self._out_size += len(data)

    def _send(self, csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes) -> None:
        data = self._writer.write(csid, type_id, stream_id, timestamp, payload)
        self._out.append(data)
        self._out_size += len(data)

    def _send_control(
        self, msg: SetChunkSize | Acknowledgement | WindowAckSize | SetPeerBandwidth | UserControl
    ) -> None:
        self._send(CSID_CONTROL, msg.TYPE_ID, 0, 0, msg.encode())
        if type(msg) is SetChunkSize:
            self._writer.chunk_size = msg.size

    def _send_command(self, csid: int, stream_id: int, name: str, tid: float, obj: Any, *args: Any) -> None:
        self._send(csid, MessageType.COMMAND_AMF0, stream_id, 0, amf0.encode(name, tid, obj, *args))

    def _send_data(self, stream_id: int, timestamp: int, *values: Any) -> None:
        self._send(CSID_STREAM, MessageType.DATA_AMF0, stream_id, timestamp, amf0.encode(*values))

    def send_audio(self, stream_id: int, timestamp: int, payload: bytes) -> None:
        """Queue one audio message (an FLV audio tag body)."""
        data = self._writer.write(CSID_AUDIO, _AUDIO, stream_id, timestamp, payload)
        self._out.append(data)
        self._out_size += len(data)

    def send_video(self, stream_id: int, timestamp: int, payload: bytes) -> None:
        """Queue one video message (an FLV video tag body)."""
        data = self._writer.write(CSID_VIDEO, _VIDEO, stream_id, timestamp, payload)
        self._out.append(data)
        self._out_size += len(data)

    def send_shared(self, stream_id: int, timestamp: int, msg: SharedMessage) -> None:
        """Queue a message from ``shared_video``/``shared_audio``: the same bytes as ``send_video``/
        ``send_audio`` would queue, built once for every connection sending that message."""
        data = self._writer.write_shared(msg, stream_id, timestamp)
        self._out.append(data)
        self._out_size += len(data)

    def direct_output(self, stream_id: int, transport: Any, timeline: Any,
                      message: Callable[[Any], SharedMessage | None]) -> Any:
        """A C ``accel.RtmpOut`` sending ``message(frame)`` for ``stream_id`` through this connection's
        chunk writer, when the C accelerator is built (else None): straight to the transport's socket
        while the transport holds nothing unsent (one ``sendmsg`` into the shared payload), else by
        ``transport.write``. It refuses a frame while anything this connection queued is unsent."""
        if accel.RtmpOut is None:
            return None
        return accel.RtmpOut(transport.write, self._out, self._writer, stream_id, timeline, message,
                             transport=transport, fd=plain_socket_fd(transport))

    def shared_now(self, stream_id: int, timestamp: int, msg: SharedMessage) -> bytes:
        """``send_shared``, then ``data_to_send()``: the bytes to write now (usually just the shared
        message, with nothing built or copied; what was queued before it comes first)."""
        data = self._writer.write_shared(msg, stream_id, timestamp)
        if not self._out:
            return data
        self._out.append(data)
        return self.data_to_send()

    def send_ping(self, timestamp: int) -> None:
        """Queue a ping request; the peer answers with a ping response carrying ``timestamp``."""
        self._send_control(UserControl(UserControlEvent.PING_REQUEST, timestamp))

    # receiving

    def _handshake_done(self) -> None:
        pass

    def _on_message(self, raw: RawMessage, events: list[Event]) -> None:
        type_id = raw.type_id
        if type_id == _VIDEO or type_id == _AUDIO:
            self._on_media(raw.stream_id, "video" if type_id == _VIDEO else "audio", raw.timestamp, raw.payload, events)
            return
        if type_id == MessageType.AGGREGATE:
            for sub in split_aggregate(raw.payload, raw.timestamp, raw.stream_id):
                if isinstance(sub, DataMessage):
                    self._on_data(sub, events)
                else:
                    kind: Literal["audio", "video"] = "video" if isinstance(sub, VideoMessage) else "audio"
                    self._on_media(sub.stream_id, kind, sub.timestamp, sub.payload, events)
            return
        msg = parse_message(type_id, raw.payload, raw.timestamp, raw.stream_id)
        if isinstance(msg, CommandMessage):
            self._on_command(msg, events)
        elif isinstance(msg, DataMessage):
            self._on_data(msg, events)
        elif isinstance(msg, UserControl):
            if msg.event == UserControlEvent.PING_REQUEST:
                self._send_control(UserControl(UserControlEvent.PING_RESPONSE, msg.value))
        elif isinstance(msg, WindowAckSize):
            self._peer_window = msg.size
        elif isinstance(msg, SetPeerBandwidth):
            if msg.size != self._window_ack_size:
                self._window_ack_size = msg.size
                self._send_control(WindowAckSize(msg.size))
        elif isinstance(msg, Acknowledgement):
            self.peer_acknowledged = msg.sequence
        # Set Chunk Size and Abort were applied by the chunk reader.

    def _on_command(self, cmd: CommandMessage, events: list[Event]) -> None:
        raise NotImplementedError

    def _on_data(self, msg: DataMessage, events: list[Event]) -> None:
        raise NotImplementedError

    def _on_media(
        self, stream_id: int, kind: Literal["audio", "video"], timestamp: int, payload: bytes, events: list[Event]
    ) -> None:
        raise NotImplementedError


# --- server ---------------------------------------------------------------------------------------

_AWAIT_CONNECT: Final = 0
_CONNECT_PENDING: Final = 1
_CONNECTED: Final = 2

_IDLE: Final = "idle"
_PUBLISH_PENDING: Final = "publish-pending"
_PUBLISHING: Final = "publishing"
_PLAY_PENDING: Final = "play-pending"
_PLAYING: Final = "playing"
_HELD_TYPES: Final = frozenset(
    (_AUDIO, _VIDEO, MessageType.COMMAND_AMF0, MessageType.COMMAND_AMF3, MessageType.DATA_AMF0,
     MessageType.DATA_AMF3, MessageType.AGGREGATE)
)  # fmt: skip
_EMPTY_RESULT_COMMANDS: Final = frozenset(("releaseStream", "FCPublish", "FCUnpublish", "_checkbw", "FCSubscribe"))


class _ServerStream:
    __slots__ = ("state", "name")

    def __init__(self) -> None:
        self.state = _IDLE
        self.name = ""


class RtmpServerConnection(_RtmpConnection):
    """The server side of one RTMP connection, for publishers and players alike.

    Flow: ``ConnectRequest`` → ``accept_connect()``; ``createStream`` is answered by itself
    (``CreateStream`` event); ``PublishRequest`` → ``accept_publish(id)`` then ``MediaData`` and
    ``Metadata`` flow; ``PlayRequest`` → ``accept_play(id)`` then ``send_metadata``/``send_video``/
    ``send_audio``. Media on a stream that is not publishing is dropped.

    Commands, data and media that arrive while a ``connect`` or ``publish`` awaits its answer
    are held (at most ``max_message_size`` + 1 MiB) and processed once it is answered: the
    answering method returns their events. So a pusher that does not wait for
    NetStream.Publish.Start loses none of its first tags (the codec headers).
    """

    def __init__(
        self,
        *,
        chunk_size: int = 4096,
        window_ack_size: int = DEFAULT_WINDOW,
        peer_bandwidth: int = DEFAULT_WINDOW,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_streams: int = 8,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        super().__init__(
            ServerHandshake(random=random),
            chunk_size=chunk_size,
            window_ack_size=window_ack_size,
            max_message_size=max_message_size,
        )
        self._peer_bandwidth = peer_bandwidth
        self._max_streams = max_streams
        self._phase = _AWAIT_CONNECT
        self._connect_tid = 0.0
        self._streams: dict[int, _ServerStream] = {}
        self._next_stream_id = 1
        self._held_messages: list[RawMessage] = []
        self._held_bytes = 0
        self._max_held = max_message_size + HELD_BYTES_SLACK
        self._publishes_pending = 0
        self.app = ""

    def stream_state(self, stream_id: int) -> str | None:
        """``idle``, ``publish-pending``, ``publishing``, ``play-pending``, ``playing``, or None if unknown."""
        st = self._streams.get(stream_id)
        return None if st is None else st.state

    # answers to events

    def accept_connect(self, *, properties: dict[str, Any] | None = None) -> list[Event]:
        """Answer ``connect`` with NetConnection.Connect.Success; return events of messages held meanwhile."""
        if self._phase != _CONNECT_PENDING:
            raise RtmpUsageError("no connect to accept")
        self._phase = _CONNECTED
        self._send_control(WindowAckSize(self._window_ack_size))
        self._send_control(SetPeerBandwidth(self._peer_bandwidth, 2))
        self._send_control(SetChunkSize(self._chunk_size))
        props = {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0, **(properties or {})}
        info = _status("status", "NetConnection.Connect.Success", "Connection succeeded.", objectEncoding=0.0)
        self._send_command(CSID_COMMAND, 0, "_result", self._connect_tid, props, info)
        return self._release()

    def reject_connect(self, reason: str) -> None:
        """Answer ``connect`` with NetConnection.Connect.Rejected; the connection is then closed."""
        if self._phase != _CONNECT_PENDING:
            raise RtmpUsageError("no connect to reject")
        info = _status("error", "NetConnection.Connect.Rejected", reason)
        self._send_command(CSID_COMMAND, 0, "_error", self._connect_tid, None, info)
        self.closed = True

    def accept_publish(self, stream_id: int) -> list[Event]:
        """Answer ``publish`` with NetStream.Publish.Start; return events of messages held meanwhile."""
        st = self._pending(stream_id, _PUBLISH_PENDING)
        st.state = _PUBLISHING
        self._publishes_pending -= 1
        self._send_control(UserControl(UserControlEvent.STREAM_BEGIN, stream_id))
        info = _status("status", "NetStream.Publish.Start", f"{st.name} is now published.", details=st.name)
        self._send_status(stream_id, info)
        return self._release()

    def reject_publish(self, stream_id: int, reason: str, code: str = "NetStream.Publish.BadName") -> list[Event]:
        """Answer ``publish`` with an error status (BadName unless ``code`` says otherwise).

        Returns events of messages held meanwhile (the stream's own media among them is dropped).
        """
        st = self._pending(stream_id, _PUBLISH_PENDING)
        st.state = _IDLE
        self._publishes_pending -= 1
        self._send_status(stream_id, _status("error", code, reason, details=st.name))
        return self._release()

    def accept_play(self, stream_id: int) -> None:
        """Answer ``play``: Stream Begin, NetStream.Play.Reset and .Start, ``|RtmpSampleAccess``."""
        st = self._pending(stream_id, _PLAY_PENDING)
        st.state = _PLAYING
        name = st.name
        self._send_control(UserControl(UserControlEvent.STREAM_BEGIN, stream_id))
        self._send_status(stream_id, _status("status", "NetStream.Play.Reset", f"Resetting {name}.", details=name))
        self._send_status(stream_id, _status("status", "NetStream.Play.Start", f"Started playing {name}.", details=name))
        self._send_data(stream_id, 0, "|RtmpSampleAccess", True, True)

    def reject_play(self, stream_id: int, reason: str, code: str = "NetStream.Play.StreamNotFound") -> None:
        """Answer ``play`` with an error status (StreamNotFound unless ``code`` says otherwise)."""
        st = self._pending(stream_id, _PLAY_PENDING)
        st.state = _IDLE
        self._send_status(stream_id, _status("error", code, reason, details=st.name))

    def end_play(self, stream_id: int, reason: str = "The stream was unpublished.") -> None:
        """Tell a player its stream ended: NetStream.Play.UnpublishNotify and Stream EOF."""
        st = self._streams.get(stream_id)
        if st is None or st.state != _PLAYING:
            raise RtmpUsageError(f"stream {stream_id} is not playing")
        self._send_status(stream_id, _status("status", "NetStream.Play.UnpublishNotify", reason, details=st.name))
        self._send_control(UserControl(UserControlEvent.STREAM_EOF, stream_id))
        st.state = _IDLE

    def send_metadata(self, stream_id: int, metadata: dict[str, Any], timestamp: int = 0) -> None:
        """Queue ``onMetaData`` for a player."""
        self._send_data(stream_id, timestamp, "onMetaData", EcmaArray(metadata))

    def _send_status(self, stream_id: int, info: dict[str, Any]) -> None:
        self._send_command(CSID_STREAM, stream_id, "onStatus", 0.0, None, info)

    def _pending(self, stream_id: int, state: str) -> _ServerStream:
        st = self._streams.get(stream_id)
        if st is None or st.state != state:
            raise RtmpUsageError(f"stream {stream_id} has no {state.split('-')[0]} request to answer")
        return st

    # incoming

    def _held(self) -> int:
        return self._held_bytes

    def _on_message(self, raw: RawMessage, events: list[Event]) -> None:
        if (self._phase == _CONNECT_PENDING or self._publishes_pending) and raw.type_id in _HELD_TYPES:
            self._held_bytes += len(raw.payload) + 64
            if self._held_bytes > self._max_held:
                raise MessageError("too much sent while an answer to connect or publish was awaited")
            self._held_messages.append(raw)
            return
        super()._on_message(raw, events)

    def _release(self) -> list[Event]:
        """Process held messages now that nothing is awaited (those after a new request are held again)."""
        events: list[Event] = []
        if self._phase == _CONNECT_PENDING or self._publishes_pending or not self._held_messages:
            return events
        held, self._held_messages = self._held_messages, []
        self._held_bytes = 0
        try:
            for raw in held:
                if self.closed:
                    break
                self._on_message(raw, events)
        except _PROTOCOL_ERRORS as exc:
            self.closed = True
            events.append(ProtocolError(str(exc)))
        return events

    def _on_media(
        self, stream_id: int, kind: Literal["audio", "video"], timestamp: int, payload: bytes, events: list[Event]
    ) -> None:
        st = self._streams.get(stream_id)
        if st is not None and st.state == _PUBLISHING:
            events.append(MediaData(stream_id, kind, timestamp, payload))

    def receive_media(
        self, data: bytes | bytearray | memoryview, on_media: MediaSink
    ) -> list[Event]:
        """``receive_data`` for a publisher's steady state: each audio/video message on a publishing
        stream that no event precedes in this call goes to ``on_media(stream_id, is_video, timestamp,
        payload)`` at once instead of becoming a ``MediaData`` (no event built, queued and dispatched);
        from the first event on, media become ``MediaData`` events as usual, so the order of media and
        other events is kept. Returns the events. ``on_media`` must not raise (errors in it are the
        caller's: they would cut the rest of ``data`` short)."""
        return self._receive(data, on_media)

    def lane_window(self) -> int | None:
        """While a lane may receive on its own (the handshake is over, nothing awaited, not closed):
        how many more bytes it may read before an acknowledgement is due (a large number when the
        peer set no window). None otherwise. See ``lane_received``."""
        if self.closed or self._handshake is not None:
            return None
        if self._publishes_pending or self._phase == _CONNECT_PENDING:
            return None  # media are held meanwhile (``_media_now``)
        if not self._peer_window:
            return 1 << 62
        return max(1, self._peer_window - (self._received - self._acked))

    def lane_received(
        self, nbytes: int, rest: Iterable[RawMessage], error: BaseException | None, on_media: MediaSink
    ) -> list[Event]:
        """What ``receive_media`` does after the chunk reader, for reads a lane took on its own
        (``PublishLane.data_received``): ``nbytes`` were read since it last reported, ``rest`` are the
        messages it did not handle, ``error`` what its reader raised (a protocol error becomes the
        ``ProtocolError`` event). Returns the events."""
        events: list[Event] = []
        if self.closed:
            return events
        self._received += nbytes
        try:
            if error is not None:
                raise error
            self._dispatch(rest, on_media, events)
            self._acknowledge()
        except _PROTOCOL_ERRORS as exc:
            self.closed = True
            events.append(ProtocolError(str(exc)))
        return events

    def publish_lane(
        self,
        memo: Any,
        slow: Callable[[int, Any, SharedMessage | None], None],
        fallback: MediaSink,
    ) -> Any:
        """A C ``accel.PublishLane`` on this connection's chunk reader, for ``receive_media``, when the
        C accelerator is built (else None). The owner ``add``s each publishing stream with its hub's
        core and arms it while ``lane_window`` allows (it then reads on its own: ``lane_received``). Frames its hub does not take in C go to ``slow(stream_id, frame, message)`` (the
        message is the tag as it came, or None when the frame must be rebuilt for players), tags that
        do not parse to ``fallback`` (``on_media``'s signature); ``memo`` is the players' message memo."""
        if accel.PublishLane is None:
            return None
        return accel.PublishLane(self._reader, memo, slow, fallback, (CSID_VIDEO, _VIDEO), (CSID_AUDIO, _AUDIO))

    def _media_now(self, raw: RawMessage, on_media: MediaSink) -> bool:
        if self._publishes_pending or self._phase == _CONNECT_PENDING:
            return False  # held until the answer, as ``_on_message`` does
        st = self._streams.get(raw.stream_id)
        if st is not None and st.state == _PUBLISHING:
            on_media(raw.stream_id, raw.type_id == _VIDEO, raw.timestamp, raw.payload)
        return True

    def _on_data(self, msg: DataMessage, events: list[Event]) -> None:
        st = self._streams.get(msg.stream_id)
        if st is None or st.state != _PUBLISHING:
            return
        if msg.name == "@setDataFrame" and msg.args and msg.args[0] == "onMetaData" or msg.name == "onMetaData":
            metadata = _metadata(msg.args)
            if metadata is not None:
                events.append(Metadata(msg.stream_id, metadata))

    def _on_command(self, cmd: CommandMessage, events: list[Event]) -> None:
        name = cmd.name
        tid = cmd.transaction_id
        if self._phase == _AWAIT_CONNECT:
            if name != "connect":
                raise MessageError(f"{name!r} before connect")
            obj = cmd.command_object if isinstance(cmd.command_object, dict) else {}
            app = obj.get("app")
            tc_url = obj.get("tcUrl")
            self.app = app if isinstance(app, str) else ""
            self._phase = _CONNECT_PENDING
            self._connect_tid = tid
            events.append(ConnectRequest(self.app, tc_url if isinstance(tc_url, str) else "", dict(obj)))
            return
        if name == "createStream":
            if len(self._streams) >= self._max_streams:
                info = _status("error", "NetConnection.Call.Failed", "too many streams")
                self._send_command(CSID_COMMAND, 0, "_error", tid, None, info)
                return
            stream_id = self._next_stream_id
            self._next_stream_id += 1
            self._streams[stream_id] = _ServerStream()
            self._send_command(CSID_COMMAND, 0, "_result", tid, None, float(stream_id))
            events.append(CreateStream(stream_id))
        elif name == "publish" or name == "play":
            self._stream_request(cmd, events)
        elif name == "deleteStream" or name == "closeStream":
            if name == "deleteStream":
                arg = cmd.args[0] if cmd.args else None
                stream_id = int(arg) if isinstance(arg, float) and 0 < arg < 2**32 else -1
            else:
                stream_id = cmd.stream_id
            st = self._streams.get(stream_id)
            if st is None:
                return
            if name == "deleteStream":
                del self._streams[stream_id]
            else:
                st.state = _IDLE
            events.append(DeleteStream(stream_id))
        elif name in _EMPTY_RESULT_COMMANDS:
            if tid:
                self._send_command(CSID_COMMAND, 0, "_result", tid, None, UNDEFINED)
        elif name == "getStreamLength":
            if tid:
                self._send_command(CSID_COMMAND, 0, "_result", tid, None, 0.0)
        elif name == "connect":
            raise MessageError("second connect on one connection")
        # Anything else (pause, receiveAudio, receiveVideo, seek, unknown calls) is ignored.

    def _stream_request(self, cmd: CommandMessage, events: list[Event]) -> None:
        stream_id = cmd.stream_id
        if not stream_id:
            raise MessageError(f"{cmd.name} on message stream 0")
        st = self._streams.get(stream_id)
        if st is None:  # tolerated: a client that never called createStream for this id
            if len(self._streams) >= self._max_streams:
                raise MessageError(f"{cmd.name} on unknown stream {stream_id}")
            st = self._streams[stream_id] = _ServerStream()
        if st.state != _IDLE:
            raise MessageError(f"{cmd.name} on stream {stream_id}, which is {st.state}")
        name = cmd.args[0] if cmd.args else None
        if not isinstance(name, str):
            raise MessageError(f"{cmd.name} without a stream name")
        st.name = name
        if cmd.name == "publish":
            kind = cmd.args[1] if len(cmd.args) > 1 and isinstance(cmd.args[1], str) else "live"
            st.state = _PUBLISH_PENDING
            self._publishes_pending += 1
            events.append(PublishRequest(stream_id, name, kind))
        else:
            start = cmd.args[1] if len(cmd.args) > 1 and isinstance(cmd.args[1], float) else -2.0
            st.state = _PLAY_PENDING
            events.append(PlayRequest(stream_id, name, start))


# --- client ---------------------------------------------------------------------------------------


class RtmpClientConnection(_RtmpConnection):
    """The client side: connect (sent as soon as the handshake ends) → createStream → publish or play.

    ``create_stream()`` returns the transaction id that ``StreamCreated`` repeats; ``publish`` and
    ``play`` are confirmed by ``StreamStatus`` events (``NetStream.Publish.Start``,
    ``NetStream.Play.Start``). Used by the device-side pusher and by tests.
    """

    def __init__(
        self,
        app: str,
        tc_url: str,
        *,
        flash_ver: str = "FMLE/3.0 (compatible; iotvideo)",
        chunk_size: int = 4096,
        window_ack_size: int = DEFAULT_WINDOW,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        super().__init__(
            ClientHandshake(random=random),
            chunk_size=chunk_size,
            window_ack_size=window_ack_size,
            max_message_size=max_message_size,
        )
        assert self._handshake is not None
        self._queue(self._handshake.data_to_send())
        self._connect_object = {"app": app, "type": "nonprivate", "flashVer": flash_ver, "tcUrl": tc_url}
        self._next_tid = 1
        self._calls: dict[float, str] = {}
        self.connected = False

    def _call(self, name: str, stream_id: int = 0, *args: Any, obj: Any = None, csid: int = CSID_COMMAND) -> int:
        tid = self._next_tid
        self._next_tid += 1
        self._calls[float(tid)] = name
        self._send_command(csid, stream_id, name, float(tid), obj, *args)
        return tid

    def _handshake_done(self) -> None:
        self._send_control(SetChunkSize(self._chunk_size))
        self._call("connect", obj=self._connect_object)

    def create_stream(self) -> int:
        """Send ``createStream``; return its transaction id."""
        if not self.connected:
            raise RtmpUsageError("not connected")
        return self._call("createStream")

    def publish(self, stream_id: int, name: str, type: str = "live") -> None:
        """Send ``publish``; ``StreamStatus`` NetStream.Publish.Start confirms it."""
        if not self.connected:
            raise RtmpUsageError("not connected")
        self._send_command(CSID_STREAM, stream_id, "publish", 0.0, None, name, type)

    def play(self, stream_id: int, name: str, start: float = -2.0, buffer_ms: int = 1000) -> None:
        """Send ``play`` and the buffer length a player announces."""
        if not self.connected:
            raise RtmpUsageError("not connected")
        self._send_command(CSID_STREAM, stream_id, "play", 0.0, None, name, float(start))
        self._send_control(UserControl(UserControlEvent.SET_BUFFER_LENGTH, stream_id, buffer_ms))

    def delete_stream(self, stream_id: int) -> None:
        """Send ``deleteStream`` (stops publishing or playing)."""
        self._send_command(CSID_COMMAND, 0, "deleteStream", 0.0, None, float(stream_id))

    def send_metadata(self, stream_id: int, metadata: dict[str, Any]) -> None:
        """Queue ``@setDataFrame("onMetaData", metadata)`` for the stream being published."""
        self._send_data(stream_id, 0, "@setDataFrame", "onMetaData", EcmaArray(metadata))

    def _on_command(self, cmd: CommandMessage, events: list[Event]) -> None:
        name = cmd.name
        if name == "_result" or name == "_error":
            call = self._calls.pop(cmd.transaction_id, None)
            info = next((a for a in cmd.args if isinstance(a, dict)), {})
            if call == "connect":
                if name == "_result":
                    self.connected = True
                    events.append(Connected(dict(info)))
                else:
                    events.append(ConnectRejected(dict(info)))
            elif call == "createStream":
                arg = cmd.args[0] if cmd.args else None
                if name == "_error" or not isinstance(arg, float) or not 0 < arg < 2**32:
                    raise MessageError("createStream failed")
                events.append(StreamCreated(int(cmd.transaction_id), int(arg)))
        elif name == "onStatus":
            info = next((a for a in cmd.args if isinstance(a, dict)), {})
            level, code, text = (info.get(k) for k in ("level", "code", "description"))
            events.append(
                StreamStatus(
                    cmd.stream_id,
                    level if isinstance(level, str) else "",
                    code if isinstance(code, str) else "",
                    text if isinstance(text, str) else "",
                    dict(info),
                )
            )
        # onBWDone, onFCPublish and other notifications need no answer.

    def _on_data(self, msg: DataMessage, events: list[Event]) -> None:
        if msg.name == "onMetaData" or msg.name == "@setDataFrame" and msg.args and msg.args[0] == "onMetaData":
            metadata = _metadata(msg.args)
            if metadata is not None:
                events.append(Metadata(msg.stream_id, metadata))

    def _on_media(
        self, stream_id: int, kind: Literal["audio", "video"], timestamp: int, payload: bytes, events: list[Event]
    ) -> None:
        events.append(MediaData(stream_id, kind, timestamp, payload))
