"""RTMP chunk streams: ``ChunkReader`` reassembles messages from chunks, ``ChunkWriter`` splits them.

A ``SharedMessage`` is a message many connections send (a stream's players): its chunked body
is built once, and each connection adds only its own first chunk header.

The reader keeps per-chunk-stream header state (formats 0–3, extended timestamps), applies Set
Chunk Size and Abort itself, and never holds more than one partial chunk header (≤ 22 bytes)
plus the bodies of messages in progress, whose declared sizes are bounded. Chunk payload is
consumed as it arrives, so a large chunk size costs no extra buffering. The usual case, a
message whose type-3 continuation chunks follow one another in what was read, is taken in one
go (headers checked at once, payloads joined); anything else goes chunk by chunk, with the same
result.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "MAX_CHUNK_SIZE",
    "ChunkError",
    "ChunkReader",
    "ChunkWriter",
    "RawMessage",
    "SharedMessage",
    "chunk_basic_header",
]

DEFAULT_CHUNK_SIZE: Final = 128
MAX_CHUNK_SIZE: Final = 16 * 1024 * 1024
"""Largest chunk size we use; larger announced sizes (legal up to 2^31-1) act like this one,
since a message (24-bit length) never exceeds it."""
DEFAULT_MAX_MESSAGE_SIZE: Final = 8 * 1024 * 1024
DEFAULT_MAX_CHUNK_STREAMS: Final = 64
_MAX_HEADER: Final = 3 + 11 + 4  # basic header + type-0 message header + extended timestamp
_SET_CHUNK_SIZE: Final = 1
_ABORT: Final = 2
_U32: Final = struct.Struct(">I")
_U32LE: Final = struct.Struct("<I")
_U64: Final = struct.Struct(">Q")


class ChunkError(ValueError):
    """Malformed chunk stream, or one over the configured limits."""


@dataclass(slots=True, unsafe_hash=True)
class RawMessage:
    """One reassembled RTMP message: type id, message stream id, 32-bit timestamp (ms), body.

    Treat as immutable; not ``frozen`` only because a frozen dataclass costs three times as much
    to build, and one is built per message."""

    type_id: int
    stream_id: int
    timestamp: int
    payload: bytes = field(repr=False)


class _InStream:
    """Header state of one incoming chunk stream, and its message in progress."""

    __slots__ = (
        "timestamp", "delta", "length", "type_id", "stream_id", "ext", "ext_value", "remaining", "body", "basic3"
    )  # fmt: skip

    def __init__(self, csid: int) -> None:
        self.timestamp = 0
        self.delta = 0  # the last type 0/1/2 timestamp field: what a new type-3 message adds
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        self.ext = False  # the last type 0/1/2 header carried an extended timestamp
        self.ext_value = 0
        self.remaining = 0  # bytes still expected for the message in progress (0: none)
        self.body: bytearray | None = None
        self.basic3 = chunk_basic_header(3, csid)  # what starts a continuation chunk (in its shortest form)


class ChunkReader:
    """Feed it bytes after the handshake; get back whole messages (``RawMessage``) in order.

    Limits: a message longer than ``max_message_size``, more than ``max_chunk_streams`` chunk
    stream ids, or declared sizes of messages in progress summing above ``max_pending_bytes``
    raise ``ChunkError``. After an error the reader is dead: every later ``feed`` raises again.
    """

    __slots__ = (
        "chunk_size",
        "max_message_size",
        "max_chunk_streams",
        "max_pending_bytes",
        "_streams",
        "_head",
        "_cur",
        "_chunk_left",
        "_pending",
        "_error",
    )

    def __init__(
        self,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_chunk_streams: int = DEFAULT_MAX_CHUNK_STREAMS,
        max_pending_bytes: int | None = None,
    ) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.max_message_size = max_message_size
        self.max_chunk_streams = max_chunk_streams
        self.max_pending_bytes = 2 * max_message_size if max_pending_bytes is None else max_pending_bytes
        self._streams: dict[int, _InStream] = {}
        self._head = bytearray()  # a chunk header split across feeds
        self._cur: _InStream | None = None  # stream whose chunk payload is being read
        self._chunk_left = 0
        self._pending = 0
        self._error: ChunkError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held: a partial chunk header plus the bodies of messages in progress."""
        return len(self._head) + sum(len(s.body) for s in self._streams.values() if s.body is not None)

    def feed(self, data: bytes | bytearray | memoryview) -> list[RawMessage]:
        """Consume ``data``; return the messages it completes. Raises ``ChunkError``."""
        if self._error is not None:
            raise self._error
        out: list[RawMessage] = []
        try:
            if type(data) is bytes:  # whole messages are sliced from it: one copy, no views
                self._feed(memoryview(data), out, data)
            else:
                with memoryview(data) as raw, raw.cast("B") as view:  # released: a bytearray stays resizable
                    self._feed(view, out, None)
        except ChunkError as exc:
            self._error = exc
            self._streams.clear()
            self._head.clear()
            raise
        return out

    def _feed(self, view: memoryview, out: list[RawMessage], src: bytes | None) -> None:
        n = len(view)
        pos = 0
        if self._head:
            head = self._head
            old = len(head)
            head += view[:_MAX_HEADER]
            with memoryview(head) as hv:
                size = self._header(hv, 0, len(head), out)
            if size is None:  # still incomplete: all of ``view`` went into ``head``
                return
            if size < old:  # a peeked extended timestamp was absent: held bytes are payload
                rest = bytes(head[size:old])
                head.clear()
                self._feed(memoryview(rest), out, rest)
                self._feed(view, out, src)
                return
            pos = size - old
            head.clear()
        while True:
            left = self._chunk_left
            if left:
                st = self._cur
                assert st is not None
                if st.remaining > left and not st.ext:  # more chunks of this message follow
                    pos = self._run(st, view, pos, n, out)
                if self._chunk_left:
                    pos = self._payload(view, pos, n, out, src)
                    if self._chunk_left:
                        return
            if pos >= n:
                return
            size = self._header(view, pos, n, out)
            if size is None:
                self._head += view[pos:]
                return
            pos += size

    def _run(self, st: _InStream, view: memoryview, pos: int, n: int, out: list[RawMessage]) -> int:
        """Fast path: the rest of ``st``'s message when it goes on in consecutive type-3 continuation
        chunks of the same chunk stream (the usual case): their headers are checked all at once and
        their payloads joined with one copy.

        ``pos`` is where the current chunk's ``_chunk_left`` payload bytes start. Takes every
        continuation chunk in ``view`` up to the message's end or the first other header, and
        returns the position after what it took (``pos``: nothing taken; the general path reads
        chunk by chunk). The state it leaves is the general path's. Only without an extended
        timestamp, whose repetition in continuation chunks is decided chunk by chunk."""
        basic = st.basic3
        hl = len(basic)
        size = self.chunk_size
        first = self._chunk_left
        remaining = st.remaining
        step = size + hl
        start = pos + first  # the first continuation header
        if start + hl > n:
            return pos
        count = min((remaining - first + size - 1) // size, (n - start - hl) // step + 1)  # headers in view
        for j in range(hl):  # how many of them, in a row, start like a continuation of ours
            heads = view[start + j : start + j + (count - 1) * step + 1 : step].tobytes()
            count = len(heads) - len(heads.lstrip(basic[j : j + 1]))  # leading matches (one byte)
            if not count:
                return pos
        last = start + (count - 1) * step + hl  # the last chunk's payload
        last_end = last + min(size, remaining - first - (count - 1) * size)
        end = min(n, last_end)
        msg = view[pos:end]
        parts = [msg[:first]]
        parts += [msg[i : i + size] for i in range(first + hl, end - pos, step)]
        data = b"".join(parts)
        self._chunk_left = last_end - end
        st.remaining = remaining - len(data)
        body = st.body
        if st.remaining:
            if body is None:
                st.body = bytearray(data)
            else:
                body += data
        elif body is None:
            self._complete(st, data, out)
        else:
            st.body = None
            body += data
            self._complete(st, bytes(body), out)
        return end

    def _payload(self, view: memoryview, pos: int, n: int, out: list[RawMessage], src: bytes | None) -> int:
        st = self._cur
        assert st is not None
        take = self._chunk_left
        if take > n - pos:
            take = n - pos
        end = pos + take
        if st.body is None:
            if take == st.remaining:  # the whole message is here: one copy
                self._chunk_left = 0
                st.remaining = 0
                self._complete(st, bytes(view[pos:end]) if src is None else src[pos:end], out)
                return end
            st.body = bytearray(view[pos:end])
        else:
            st.body += view[pos:end]
        self._chunk_left -= take
        st.remaining -= take
        if not st.remaining:
            body = st.body
            st.body = None
            self._complete(st, bytes(body), out)
        return end

    def _complete(self, st: _InStream, payload: bytes, out: list[RawMessage]) -> None:
        self._pending -= st.length
        type_id = st.type_id
        if type_id == _SET_CHUNK_SIZE or type_id == _ABORT:
            if len(payload) < 4:
                raise ChunkError(f"control message type {type_id} shorter than 4 bytes")
            value = _U32.unpack_from(payload)[0]
            if type_id == _SET_CHUNK_SIZE:
                if value & 0x80000000 or not value:
                    raise ChunkError(f"invalid chunk size {value}")
                self.chunk_size = min(value, MAX_CHUNK_SIZE)
            else:
                aborted = self._streams.get(value)
                if aborted is not None and aborted.remaining:
                    self._pending -= aborted.length
                    aborted.remaining = 0
                    aborted.body = None
        out.append(RawMessage(type_id, st.stream_id, st.timestamp, payload))

    def _header(self, mv: memoryview, pos: int, end: int, out: list[RawMessage]) -> int | None:
        """Parse and apply the chunk header at ``pos``; return its size, or None (state untouched) if incomplete."""
        b0 = mv[pos]
        fmt = b0 >> 6
        csid = b0 & 0x3F
        i = pos + 1
        if csid == 0:
            if i >= end:
                return None
            csid = 64 + mv[i]
            i += 1
        elif csid == 1:
            if i + 2 > end:
                return None
            csid = 64 + mv[i] + (mv[i + 1] << 8)
            i += 2
        st = self._streams.get(csid)
        field = length = type_id = stream_id = 0
        ext = False
        if fmt == 3:
            if st is None:
                raise ChunkError(f"type-3 chunk on chunk stream {csid} before any header")
            if st.ext:
                # Spec: a type-3 chunk repeats the extended timestamp of the stream's last header.
                # Some encoders leave it out; accept it only when it matches what it must repeat.
                if i + 4 > end:
                    return None
                value = _U32.unpack_from(mv, i)[0]
                if value == st.ext_value or value == st.timestamp:
                    i += 4
        else:
            size = 11 if fmt == 0 else 7 if fmt == 1 else 3
            if i + size > end:
                return None
            if fmt < 2:  # from the basic header's last byte: timestamp field, length, type id
                word = _U64.unpack_from(mv, i - 1)[0]
                field = (word >> 32) & 0xFFFFFF
                length = (word >> 8) & 0xFFFFFF
                type_id = word & 0xFF
                if fmt == 0:
                    stream_id = _U32LE.unpack_from(mv, i + 7)[0]
            else:
                field = _U32.unpack_from(mv, i - 1)[0] & 0xFFFFFF
            i += size
            if field == 0xFFFFFF:
                if i + 4 > end:
                    return None
                field = _U32.unpack_from(mv, i)[0]
                ext = True
                i += 4
            if st is None:
                if fmt == 2:
                    raise ChunkError(f"type-2 chunk on chunk stream {csid} before any length")
                if len(self._streams) >= self.max_chunk_streams:
                    raise ChunkError(f"more than {self.max_chunk_streams} chunk streams")
                st = self._streams[csid] = _InStream(csid)
        # The header is complete: apply it.
        self._cur = st
        if st.remaining:
            if fmt == 3:  # continuation of the message in progress
                left = st.remaining
                self._chunk_left = left if left < self.chunk_size else self.chunk_size
                return i - pos
            # A new header in the middle of a message: drop the partial message, as FFmpeg does.
            self._pending -= st.length
            st.remaining = 0
            st.body = None
        if fmt == 0:
            st.timestamp = field
            st.delta = field
            st.length = length
            st.type_id = type_id
            st.stream_id = stream_id
        elif fmt == 3:
            st.timestamp = (st.timestamp + st.delta) & 0xFFFFFFFF
        else:
            st.timestamp = (st.timestamp + field) & 0xFFFFFFFF
            st.delta = field
            if fmt == 1:
                st.length = length
                st.type_id = type_id
        if fmt < 3:
            st.ext = ext
            st.ext_value = field
        length = st.length
        if length > self.max_message_size:
            raise ChunkError(f"message of {length} bytes exceeds max_message_size {self.max_message_size}")
        self._pending += length
        if self._pending > self.max_pending_bytes:
            raise ChunkError(f"messages in progress exceed {self.max_pending_bytes} bytes")
        if not length:
            self._chunk_left = 0
            self._complete(st, b"", out)
        else:
            st.remaining = length
            self._chunk_left = length if length < self.chunk_size else self.chunk_size
        return i - pos


def chunk_basic_header(fmt: int, csid: int) -> bytes:
    """The 1–3 byte basic header for chunk stream ids 2..65599."""
    if 2 <= csid <= 63:
        return bytes(((fmt << 6) | csid,))
    if 64 <= csid <= 319:
        return bytes((fmt << 6, csid - 64))
    if 320 <= csid <= 65599:
        return bytes(((fmt << 6) | 1, (csid - 64) & 0xFF, (csid - 64) >> 8))
    raise ValueError(f"chunk stream id {csid} out of range 2..65599")


class _OutStream:
    __slots__ = ("stream_id", "length", "type_id", "timestamp", "delta", "basic3")

    def __init__(self, basic3: bytes) -> None:
        self.stream_id = -1
        self.length = -1
        self.type_id = -1
        self.timestamp = 0
        self.delta = -1  # -1: the last header was type 0, so a new type-3 message is avoided
        self.basic3 = basic3


class SharedMessage:
    """One audio or video message sent to many connections (a stream's players): the chunked
    body is built once, and whole messages (header included) are reused by every connection
    whose chunk header comes out the same. Build one per frame; ``ChunkWriter.write_shared``
    writes it."""

    __slots__ = ("csid", "type_id", "payload", "length", "_tail", "_tail_size", "_whole")

    MAX_HEADERS: Final = 4  # distinct headers kept per message (players on the same timeline share one)

    def __init__(self, csid: int, type_id: int, payload: bytes) -> None:
        if len(payload) > 0xFFFFFF:
            raise ValueError(f"message of {len(payload)} bytes exceeds the 24-bit length field")
        self.csid = csid
        self.type_id = type_id
        self.payload = payload
        self.length = len(payload)
        self._tail: bytes | memoryview | None = None  # everything after the first chunk header
        self._tail_size = 0  # the chunk size ``_tail`` was cut with
        self._whole: dict[tuple[int, int, int, int], bytes] = {}


class ChunkWriter:
    """Splits messages into chunks of ``chunk_size`` with header compression per chunk stream.

    A new message uses type 0 on a fresh chunk stream, a new message stream id or a timestamp
    going backwards; type 1 when length or type changed; type 3 when it repeats the previous
    type-1/2 delta exactly; type 2 otherwise. After a type-0 header the next message is never
    type 3 (readers disagree on what it would add). Continuation chunks are type 3 and repeat
    the extended timestamp when there is one. ``write_shared`` gives the same bytes as ``write``
    for a ``SharedMessage``, reusing what other writers already built for it.
    """

    __slots__ = ("chunk_size", "_streams")

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.chunk_size = chunk_size
        self._streams: dict[int, _OutStream] = {}

    def write(self, csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes) -> bytes:
        """The chunks carrying one message, as one ``bytes``."""
        length = len(payload)
        if length > 0xFFFFFF:
            raise ValueError(f"message of {length} bytes exceeds the 24-bit length field")
        st, fmt, field = self._advance(csid, type_id, stream_id, timestamp, length)
        return self._chunks(st, self._header(st, csid, fmt, field, length, type_id, stream_id), field, payload)

    def write_shared(self, msg: SharedMessage, stream_id: int, timestamp: int) -> bytes:
        """``write(msg.csid, msg.type_id, stream_id, timestamp, msg.payload)``, mostly without building anything."""
        if type(msg) is not SharedMessage:  # the C accelerator's twin (accel.SharedMessage): built here
            return self.write(msg.csid, msg.type_id, stream_id, timestamp, msg.payload)
        csid, type_id, length = msg.csid, msg.type_id, msg.length
        st, fmt, field = self._advance(csid, type_id, stream_id, timestamp, length)
        size = self.chunk_size
        key = (fmt, field, stream_id, size)
        whole = msg._whole.get(key)
        if whole is not None:
            return whole
        header = self._header(st, csid, fmt, field, length, type_id, stream_id)
        if field >= 0xFFFFFF:  # continuation chunks repeat the extended timestamp: nothing to share
            whole = self._chunks(st, header, field, msg.payload)
        elif msg._tail is not None and msg._tail_size == size:
            whole = header + msg._tail
        else:
            whole = self._chunks(st, header, field, msg.payload)
            msg._tail = memoryview(whole)[len(header) :]
            msg._tail_size = size
        if len(msg._whole) < SharedMessage.MAX_HEADERS:
            msg._whole[key] = whole
        return whole

    def _advance(self, csid: int, type_id: int, stream_id: int, timestamp: int, length: int) -> tuple[_OutStream, int, int]:
        """Choose the header format of a new message and record it as the chunk stream's last."""
        timestamp &= 0xFFFFFFFF
        st = self._streams.get(csid)
        if st is None:
            st = self._streams[csid] = _OutStream(chunk_basic_header(3, csid))
        if st.stream_id != stream_id or timestamp < st.timestamp:
            fmt = 0
            field = timestamp
        else:
            field = timestamp - st.timestamp
            if length != st.length or type_id != st.type_id:
                fmt = 1
            elif field == st.delta:
                fmt = 3
            else:
                fmt = 2
        st.stream_id = stream_id
        st.length = length
        st.type_id = type_id
        st.timestamp = timestamp
        st.delta = -1 if fmt == 0 else field
        return st, fmt, field

    @staticmethod
    def _header(st: _OutStream, csid: int, fmt: int, field: int, length: int, type_id: int, stream_id: int) -> bytes:
        ext = field >= 0xFFFFFF
        f24 = 0xFFFFFF if ext else field
        if fmt == 0:
            header = (
                chunk_basic_header(0, csid)
                + ((f24 << 32) | (length << 8) | type_id).to_bytes(7, "big")
                + stream_id.to_bytes(4, "little")
            )
        elif fmt == 1:
            header = chunk_basic_header(1, csid) + ((f24 << 32) | (length << 8) | type_id).to_bytes(7, "big")
        elif fmt == 2:
            header = chunk_basic_header(2, csid) + f24.to_bytes(3, "big")
        else:
            header = st.basic3
        if ext:
            header += _U32.pack(field)
        return header

    def _chunks(self, st: _OutStream, header: bytes, field: int, payload: bytes) -> bytes:
        size = self.chunk_size
        length = len(payload)
        if length <= size:
            return header + payload
        cont = st.basic3 + _U32.pack(field) if field >= 0xFFFFFF else st.basic3
        mv = memoryview(payload)
        parts: list[bytes | memoryview] = [header, mv[:size]]
        for off in range(size, length, size):
            parts.append(cont)
            parts.append(mv[off : off + size])
        return b"".join(parts)

    def forget(self, csid: int) -> None:
        """Drop the header state of ``csid`` (its next message starts with a type-0 header)."""
        self._streams.pop(csid, None)
