"""Typed RTMP messages: protocol control, user control, AMF0 commands and data, audio and video.

``parse_message`` turns a reassembled message body into one of the dataclasses below; each
dataclass's ``encode()`` gives the body back, and its ``TYPE_ID`` the message type id.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar, Final

from . import amf0
from .amf0 import AmfError

__all__ = [
    "Abort",
    "Acknowledgement",
    "AudioMessage",
    "CommandMessage",
    "DataMessage",
    "Message",
    "MessageError",
    "MessageType",
    "SetChunkSize",
    "SetPeerBandwidth",
    "UserControl",
    "UserControlEvent",
    "VideoMessage",
    "WindowAckSize",
    "parse_message",
    "split_aggregate",
]

_U32: Final = struct.Struct(">I")


class MessageError(ValueError):
    """A message body that does not match its type."""


class MessageType(IntEnum):
    SET_CHUNK_SIZE = 1
    ABORT = 2
    ACKNOWLEDGEMENT = 3
    USER_CONTROL = 4
    WINDOW_ACK_SIZE = 5
    SET_PEER_BANDWIDTH = 6
    AUDIO = 8
    VIDEO = 9
    DATA_AMF3 = 15
    SHARED_OBJECT_AMF3 = 16
    COMMAND_AMF3 = 17
    DATA_AMF0 = 18
    SHARED_OBJECT_AMF0 = 19
    COMMAND_AMF0 = 20
    AGGREGATE = 22


class UserControlEvent(IntEnum):
    STREAM_BEGIN = 0
    STREAM_EOF = 1
    STREAM_DRY = 2
    SET_BUFFER_LENGTH = 3
    STREAM_IS_RECORDED = 4
    PING_REQUEST = 6
    PING_RESPONSE = 7


@dataclass(frozen=True, slots=True)
class SetChunkSize:
    size: int
    TYPE_ID: ClassVar[int] = MessageType.SET_CHUNK_SIZE

    def encode(self) -> bytes:
        return _U32.pack(self.size & 0x7FFFFFFF)


@dataclass(frozen=True, slots=True)
class Abort:
    csid: int
    TYPE_ID: ClassVar[int] = MessageType.ABORT

    def encode(self) -> bytes:
        return _U32.pack(self.csid)


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    sequence: int  # bytes received so far, modulo 2^32
    TYPE_ID: ClassVar[int] = MessageType.ACKNOWLEDGEMENT

    def encode(self) -> bytes:
        return _U32.pack(self.sequence & 0xFFFFFFFF)


@dataclass(frozen=True, slots=True)
class WindowAckSize:
    size: int
    TYPE_ID: ClassVar[int] = MessageType.WINDOW_ACK_SIZE

    def encode(self) -> bytes:
        return _U32.pack(self.size)


@dataclass(frozen=True, slots=True)
class SetPeerBandwidth:
    size: int
    limit_type: int = 2  # 0 hard, 1 soft, 2 dynamic
    TYPE_ID: ClassVar[int] = MessageType.SET_PEER_BANDWIDTH

    def encode(self) -> bytes:
        return _U32.pack(self.size) + bytes((self.limit_type,))


@dataclass(frozen=True, slots=True)
class UserControl:
    """A user control event: ``value`` is the stream id, or the timestamp for pings."""

    event: int
    value: int
    buffer_length: int = 0  # ms, for SET_BUFFER_LENGTH only
    TYPE_ID: ClassVar[int] = MessageType.USER_CONTROL

    def encode(self) -> bytes:
        body = struct.pack(">HI", self.event, self.value & 0xFFFFFFFF)
        if self.event == UserControlEvent.SET_BUFFER_LENGTH:
            body += _U32.pack(self.buffer_length)
        return body


@dataclass(frozen=True, slots=True)
class CommandMessage:
    """An AMF0 command: ``name(transaction_id, command_object, *args)`` on message stream ``stream_id``."""

    name: str
    transaction_id: float
    command_object: Any = None
    args: tuple[Any, ...] = ()
    stream_id: int = 0
    TYPE_ID: ClassVar[int] = MessageType.COMMAND_AMF0

    def encode(self) -> bytes:
        return amf0.encode(self.name, self.transaction_id, self.command_object, *self.args)


@dataclass(frozen=True, slots=True)
class DataMessage:
    """An AMF0 data message: ``name`` then values, e.g. ``@setDataFrame("onMetaData", {...})``."""

    name: str
    args: tuple[Any, ...] = ()
    stream_id: int = 0
    timestamp: int = 0
    TYPE_ID: ClassVar[int] = MessageType.DATA_AMF0

    def encode(self) -> bytes:
        return amf0.encode(self.name, *self.args)


@dataclass(frozen=True, slots=True)
class AudioMessage:
    timestamp: int
    stream_id: int
    payload: bytes = field(repr=False)
    TYPE_ID: ClassVar[int] = MessageType.AUDIO

    def encode(self) -> bytes:
        return self.payload


@dataclass(frozen=True, slots=True)
class VideoMessage:
    timestamp: int
    stream_id: int
    payload: bytes = field(repr=False)
    TYPE_ID: ClassVar[int] = MessageType.VIDEO

    def encode(self) -> bytes:
        return self.payload


Message = (
    SetChunkSize
    | Abort
    | Acknowledgement
    | WindowAckSize
    | SetPeerBandwidth
    | UserControl
    | CommandMessage
    | DataMessage
    | AudioMessage
    | VideoMessage
)


def _u32(payload: bytes, what: str, size: int = 4) -> int:
    if len(payload) < size:
        raise MessageError(f"{what} body of {len(payload)} bytes, expected {size}")
    return int(_U32.unpack_from(payload)[0])


def _amf_values(payload: bytes, amf3: bool, what: str) -> list[Any]:
    body: bytes | memoryview = payload
    if amf3 and payload:
        if payload[0] != 0:
            raise MessageError(f"AMF3-encoded {what} is not supported")
        body = memoryview(payload)[1:]
    try:
        return amf0.decode(body)
    except AmfError as exc:
        raise MessageError(f"{what}: {exc}") from None


def _command(payload: bytes, stream_id: int, amf3: bool) -> CommandMessage:
    values = _amf_values(payload, amf3, "command")
    if len(values) < 2 or not isinstance(values[0], str):
        raise MessageError("command without a name and transaction id")
    tid = values[1]
    if not isinstance(tid, float):
        raise MessageError(f"command {values[0]!r} with a non-numeric transaction id")
    obj = values[2] if len(values) > 2 else None
    return CommandMessage(values[0], tid, obj, tuple(values[3:]), stream_id)


def _data(payload: bytes, stream_id: int, timestamp: int, amf3: bool) -> DataMessage:
    values = _amf_values(payload, amf3, "data message")
    if not values or not isinstance(values[0], str):
        raise MessageError("data message without a name")
    return DataMessage(values[0], tuple(values[1:]), stream_id, timestamp)


def parse_message(type_id: int, payload: bytes, timestamp: int = 0, stream_id: int = 0) -> Message | None:
    """The typed message for a body; None for types we do not interpret (shared objects, aggregate)."""
    if type_id == MessageType.AUDIO:
        return AudioMessage(timestamp, stream_id, payload)
    if type_id == MessageType.VIDEO:
        return VideoMessage(timestamp, stream_id, payload)
    if type_id == MessageType.COMMAND_AMF0 or type_id == MessageType.COMMAND_AMF3:
        return _command(payload, stream_id, type_id == MessageType.COMMAND_AMF3)
    if type_id == MessageType.DATA_AMF0 or type_id == MessageType.DATA_AMF3:
        return _data(payload, stream_id, timestamp, type_id == MessageType.DATA_AMF3)
    if type_id == MessageType.SET_CHUNK_SIZE:
        return SetChunkSize(_u32(payload, "Set Chunk Size") & 0x7FFFFFFF)
    if type_id == MessageType.ABORT:
        return Abort(_u32(payload, "Abort"))
    if type_id == MessageType.ACKNOWLEDGEMENT:
        return Acknowledgement(_u32(payload, "Acknowledgement"))
    if type_id == MessageType.WINDOW_ACK_SIZE:
        return WindowAckSize(_u32(payload, "Window Acknowledgement Size"))
    if type_id == MessageType.SET_PEER_BANDWIDTH:
        return SetPeerBandwidth(_u32(payload, "Set Peer Bandwidth", 5), payload[4])
    if type_id == MessageType.USER_CONTROL:
        if len(payload) < 6:
            raise MessageError(f"User Control body of {len(payload)} bytes")
        event, value = struct.unpack_from(">HI", payload)
        if event == UserControlEvent.SET_BUFFER_LENGTH:
            if len(payload) < 10:
                raise MessageError("Set Buffer Length without a length")
            return UserControl(event, value, _U32.unpack_from(payload, 6)[0])
        return UserControl(event, value)
    return None


def split_aggregate(payload: bytes, timestamp: int, stream_id: int) -> list[AudioMessage | VideoMessage | DataMessage]:
    """The messages inside an aggregate message (FLV tags: header, body, back pointer).

    Sub-message timestamps keep their offsets from the first one, rebased on ``timestamp``.
    """
    out: list[AudioMessage | VideoMessage | DataMessage] = []
    mv = memoryview(payload)
    pos = 0
    end = len(payload)
    base: int | None = None
    while pos < end:
        if pos + 11 > end:
            raise MessageError("truncated aggregate sub-message header")
        kind = mv[pos]
        size = (mv[pos + 1] << 16) | (mv[pos + 2] << 8) | mv[pos + 3]
        ts = (mv[pos + 7] << 24) | (mv[pos + 4] << 16) | (mv[pos + 5] << 8) | mv[pos + 6]
        body_end = pos + 11 + size
        if body_end + 4 > end:
            raise MessageError("truncated aggregate sub-message")
        if base is None:
            base = ts
        ts = (timestamp + ts - base) & 0xFFFFFFFF
        body = bytes(mv[pos + 11 : body_end])
        if kind == MessageType.AUDIO:
            out.append(AudioMessage(ts, stream_id, body))
        elif kind == MessageType.VIDEO:
            out.append(VideoMessage(ts, stream_id, body))
        elif kind == MessageType.DATA_AMF0:
            out.append(_data(body, stream_id, ts, False))
        pos = body_end + 4
    return out
