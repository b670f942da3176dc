"""Sans-IO RTMP: handshake, chunk streams, AMF0, typed messages, and server/client connection state machines."""

from .amf0 import UNDEFINED, AmfDate, AmfError, EcmaArray
from .chunk import ChunkError, ChunkReader, ChunkWriter, RawMessage
from .connection import (
    ConnectionClosed,
    Connected,
    ConnectRejected,
    ConnectRequest,
    CreateStream,
    DeleteStream,
    Event,
    MediaData,
    Metadata,
    PlayRequest,
    ProtocolError,
    PublishRequest,
    RtmpClientConnection,
    RtmpServerConnection,
    RtmpUsageError,
    StreamCreated,
    StreamStatus,
)
from .handshake import ClientHandshake, HandshakeError, ServerHandshake
from .messages import MessageError

__all__ = [
    "UNDEFINED",
    "AmfDate",
    "AmfError",
    "ChunkError",
    "ChunkReader",
    "ChunkWriter",
    "ClientHandshake",
    "ConnectRejected",
    "ConnectRequest",
    "Connected",
    "ConnectionClosed",
    "CreateStream",
    "DeleteStream",
    "EcmaArray",
    "Event",
    "HandshakeError",
    "MediaData",
    "MessageError",
    "Metadata",
    "PlayRequest",
    "ProtocolError",
    "PublishRequest",
    "RawMessage",
    "RtmpClientConnection",
    "RtmpServerConnection",
    "RtmpUsageError",
    "ServerHandshake",
    "StreamCreated",
    "StreamStatus",
]
