"""Incremental MQTT 3.1.1 packet reader (sans-IO): feed it bytes, get complete packets back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal

from .packets import (
    CONNACK_IDENTIFIER_REJECTED,
    CONNACK_UNACCEPTABLE_PROTOCOL_VERSION,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    PubRec,
    PubRel,
    Publish,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)
from .topics import valid_topic_filter

__all__ = ["DEFAULT_MAX_PACKET_SIZE", "MqttProtocolError", "PacketReader"]

DEFAULT_MAX_PACKET_SIZE: Final = 256 * 1024


class MqttProtocolError(Exception):
    """The peer sent malformed or forbidden bytes; the connection must be closed.

    ``connack_code`` is set when a server should first answer the CONNECT with a CONNACK carrying
    that return code (0x01 unsupported protocol level, 0x02 rejected client identifier); when it is
    None the server closes without a CONNACK.
    """

    def __init__(self, reason: str, connack_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.connack_code = connack_code


_NAMES: Final = (
    "reserved(0)", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP",
    "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT", "reserved(15)",
)  # fmt: skip
# Required fixed-header flags per packet type (PUBLISH, 3, is checked apart; None = reserved type).
_FLAGS: Final = (None, 0, 0, None, 0, 0, 2, 0, 2, 0, 2, 0, 0, 0, 0, None)
# Exact remaining length for fixed-size packets, None where it varies.
_FIXED_LENGTH: Final = (None, None, 2, None, 2, 2, 2, 2, None, None, None, 2, 0, 0, 0, None)
_FROM_CLIENT: Final = frozenset((1, 3, 4, 5, 6, 7, 8, 10, 12, 14))
_FROM_SERVER: Final = frozenset((2, 3, 4, 5, 6, 7, 9, 11, 13))
_SUBACK_INVALID_DELETE: Final = b"\x00\x01\x02\x80"
_PINGREQ: Final = PingReq()
_PINGRESP: Final = PingResp()
_DISCONNECT: Final = Disconnect()


def _u16(mv: memoryview, i: int, end: int, what: str) -> int:
    if i + 2 > end:
        raise MqttProtocolError(f"truncated {what}")
    return (mv[i] << 8) | mv[i + 1]


def _packet_id(mv: memoryview, i: int, end: int) -> int:
    pid = _u16(mv, i, end, "packet identifier")
    if not pid:
        raise MqttProtocolError("packet identifier 0")
    return pid


def _binary(mv: memoryview, i: int, end: int, what: str) -> tuple[bytes, int]:
    j = i + 2 + _u16(mv, i, end, f"{what} length")
    if j > end:
        raise MqttProtocolError(f"truncated {what}")
    return bytes(mv[i + 2 : j]), j


def _string(mv: memoryview, i: int, end: int, what: str) -> tuple[str, int]:
    j = i + 2 + _u16(mv, i, end, f"{what} length")
    if j > end:
        raise MqttProtocolError(f"truncated {what}")
    try:
        s = str(mv[i + 2 : j], "utf-8")
    except UnicodeDecodeError:
        raise MqttProtocolError(f"{what} is not valid UTF-8") from None
    if "\x00" in s:
        raise MqttProtocolError(f"{what} contains U+0000")
    return s, j


def _topic_name(mv: memoryview, i: int, end: int, what: str) -> tuple[str, int]:
    topic, i = _string(mv, i, end, what)
    if not topic:
        raise MqttProtocolError(f"empty {what}")
    if "+" in topic or "#" in topic:
        raise MqttProtocolError(f"wildcard in {what} {topic!r}")
    return topic, i


def _topic_filter(mv: memoryview, i: int, end: int) -> tuple[str, int]:
    topic_filter, i = _string(mv, i, end, "topic filter")
    if not valid_topic_filter(topic_filter):
        raise MqttProtocolError(f"invalid topic filter {topic_filter!r}")
    return topic_filter, i


def _connect(mv: memoryview, flags: int, i: int, end: int) -> Connect:
    name, i = _string(mv, i, end, "protocol name")
    if i >= end:
        raise MqttProtocolError("truncated CONNECT: no protocol level")
    level = mv[i]
    if name == "MQTT":
        if level != 4:
            raise MqttProtocolError(f"unsupported protocol level {level}", CONNACK_UNACCEPTABLE_PROTOCOL_VERSION)
    elif name == "MQIsdp":
        if level != 3:
            raise MqttProtocolError(f"unsupported protocol level {level}", CONNACK_UNACCEPTABLE_PROTOCOL_VERSION)
    else:
        raise MqttProtocolError(f"unknown protocol name {name!r}")
    if i + 4 > end:
        raise MqttProtocolError("truncated CONNECT variable header")
    cflags = mv[i + 1]
    keepalive = (mv[i + 2] << 8) | mv[i + 3]
    i += 4
    mqtt31 = level == 3
    if cflags & 0x01 and not mqtt31:
        raise MqttProtocolError("CONNECT reserved flag set [MQTT-3.1.2-3]")
    clean = bool(cflags & 0x02)
    will = cflags & 0x04
    will_qos = (cflags >> 3) & 0x03
    will_retain = bool(cflags & 0x20)
    has_password = cflags & 0x40
    has_username = cflags & 0x80
    if will_qos == 3:
        raise MqttProtocolError("will QoS 3")
    if not will and (will_qos or will_retain):
        raise MqttProtocolError("will QoS/retain set without will flag [MQTT-3.1.2-13]")
    if has_password and not has_username and not mqtt31:
        raise MqttProtocolError("password flag without username flag [MQTT-3.1.2-22]")
    client_id, i = _string(mv, i, end, "client identifier")
    if not client_id and (mqtt31 or not clean):
        raise MqttProtocolError("empty client identifier not allowed here", CONNACK_IDENTIFIER_REJECTED)
    will_topic: str | None = None
    will_payload: bytes | None = None
    if will:
        will_topic, i = _topic_name(mv, i, end, "will topic")
        will_payload, i = _binary(mv, i, end, "will message")
    username: str | None = None
    password: bytes | None = None
    # MQTT 3.1 clients may set the flags yet omit the fields; tolerate that as mosquitto does.
    if has_username and not (mqtt31 and i == end):
        username, i = _string(mv, i, end, "user name")
    if has_password and not (mqtt31 and i == end):
        password, i = _binary(mv, i, end, "password")
    if i != end:
        raise MqttProtocolError("trailing bytes after CONNECT payload")
    return Connect(
        protocol_name=name,
        protocol_level=level,
        client_id=client_id,
        username=username,
        password=password,
        keepalive=keepalive,
        clean_session=clean,
        will_topic=will_topic,
        will_payload=will_payload,
        will_qos=will_qos,
        will_retain=will_retain,
    )


def _connack(mv: memoryview, flags: int, i: int, end: int) -> ConnAck:
    ack_flags, code = mv[i], mv[i + 1]
    if ack_flags & 0xFE:
        raise MqttProtocolError("CONNACK reserved flags set")
    if code > 5:
        raise MqttProtocolError(f"reserved CONNACK return code {code}")
    if ack_flags and code:
        raise MqttProtocolError("session present with a refused connection [MQTT-3.2.2-4]")
    return ConnAck(bool(ack_flags), code)


def _publish(mv: memoryview, flags: int, i: int, end: int) -> Publish:
    topic, i = _topic_name(mv, i, end, "topic name")
    qos = (flags >> 1) & 0x03
    packet_id: int | None = None
    if qos:
        packet_id = _packet_id(mv, i, end)
        i += 2
    return Publish(topic, bytes(mv[i:end]), qos, bool(flags & 0x01), bool(flags & 0x08), packet_id)


def _subscribe(mv: memoryview, flags: int, i: int, end: int) -> Subscribe:
    packet_id = _packet_id(mv, i, end)
    i += 2
    topics: list[tuple[str, int]] = []
    while i < end:
        topic_filter, i = _topic_filter(mv, i, end)
        if i >= end:
            raise MqttProtocolError("SUBSCRIBE filter without requested QoS")
        qos = mv[i]
        i += 1
        if qos > 2:
            raise MqttProtocolError(f"invalid requested QoS byte {qos:#04x} [MQTT-3.8.3-4]")
        topics.append((topic_filter, qos))
    if not topics:
        raise MqttProtocolError("SUBSCRIBE without topic filters [MQTT-3.8.3-3]")
    return Subscribe(packet_id, tuple(topics))


def _suback(mv: memoryview, flags: int, i: int, end: int) -> SubAck:
    packet_id = _packet_id(mv, i, end)
    codes = bytes(mv[i + 2 : end])
    if not codes:
        raise MqttProtocolError("SUBACK without return codes")
    if codes.translate(None, _SUBACK_INVALID_DELETE):
        raise MqttProtocolError("reserved SUBACK return code")
    return SubAck(packet_id, tuple(codes))


def _unsubscribe(mv: memoryview, flags: int, i: int, end: int) -> Unsubscribe:
    packet_id = _packet_id(mv, i, end)
    i += 2
    topics: list[str] = []
    while i < end:
        topic_filter, i = _topic_filter(mv, i, end)
        topics.append(topic_filter)
    if not topics:
        raise MqttProtocolError("UNSUBSCRIBE without topic filters [MQTT-3.10.3-2]")
    return Unsubscribe(packet_id, tuple(topics))


def _ack(cls: type[PubAck | PubRec | PubRel | PubComp | UnsubAck]) -> Callable[[memoryview, int, int, int], Packet]:
    def parse(mv: memoryview, flags: int, i: int, end: int) -> Packet:
        return cls(_packet_id(mv, i, end))

    return parse


_PARSERS: Final[tuple[Callable[[memoryview, int, int, int], Packet] | None, ...]] = (
    None,
    _connect,
    _connack,
    _publish,
    _ack(PubAck),
    _ack(PubRec),
    _ack(PubRel),
    _ack(PubComp),
    _subscribe,
    _suback,
    _unsubscribe,
    _ack(UnsubAck),
    lambda mv, flags, i, end: _PINGREQ,
    lambda mv, flags, i, end: _PINGRESP,
    lambda mv, flags, i, end: _DISCONNECT,
    None,
)


class PacketReader:
    """Buffers a byte stream and returns the complete packets in it, in order.

    ``role="server"`` accepts only client-to-server packets, ``role="client"`` only
    server-to-client ones, None accepts both. A packet whose size (fixed header included)
    exceeds ``max_packet_size`` is refused as soon as its fixed header is read, so at most one
    partial packet (< ``max_packet_size`` bytes) is ever held. After a ``MqttProtocolError``
    the reader is dead: every later ``feed`` raises it again.

    ``protocol_level`` is learnt from a CONNECT read (or set by the owner); at level 3
    (MQTT 3.1) PUBREL/SUBSCRIBE/UNSUBSCRIBE may carry the DUP flag as 3.1 allowed.
    """

    __slots__ = ("_buf", "_error", "_header_len", "_total", "_accepts", "max_packet_size", "protocol_level", "role")

    def __init__(
        self,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        *,
        role: Literal["server", "client"] | None = None,
    ) -> None:
        if max_packet_size < 2:
            raise ValueError("max_packet_size must be at least 2")
        if role not in ("server", "client", None):
            raise ValueError(f"role must be 'server', 'client' or None, not {role!r}")
        self.max_packet_size = max_packet_size
        self.role = role
        self.protocol_level: int | None = None
        self._accepts = None if role is None else _FROM_CLIENT if role == "server" else _FROM_SERVER
        self._buf = bytearray()
        self._total = 0  # size of the buffered partial packet once its fixed header is known
        self._header_len = 0
        self._error: MqttProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for a packet not yet complete."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Packet]:
        """Consume ``data``; return the packets it completes. Raises ``MqttProtocolError``."""
        if self._error is not None:
            raise self._error
        out: list[Packet] = []
        try:
            with memoryview(data) as raw, raw.cast("B") as view:
                self._feed(view, out)
        except MqttProtocolError as exc:
            self._error = exc
            self._buf = bytearray()
            raise
        return out

    def _feed(self, view: memoryview, out: list[Packet]) -> None:
        n = len(view)
        pos = 0
        buf = self._buf
        if buf:
            total = self._total
            if not total:  # the fixed header itself was split; at most 5 bytes settle it
                take = min(5 - len(buf), n)
                buf += view[:take]
                with memoryview(buf) as bv:
                    header = self._header(bv, 0, len(buf))
                if header is None:
                    return
                self._header_len, total = header
                if len(buf) > total:  # we took bytes of the next packet: give them back
                    take -= len(buf) - total
                    del buf[total:]
                pos = take
                self._total = total
            take = min(total - len(buf), n - pos)
            buf += view[pos : pos + take]
            pos += take
            if len(buf) < total:
                return
            with memoryview(buf) as bv:
                out.append(self._parse(bv, 0, self._header_len, total))
            buf.clear()
            self._total = 0
        while pos < n:
            header = self._header(view, pos, n)
            if header is None:
                buf += view[pos:]
                return
            header_len, total = header
            if pos + total > n:
                buf += view[pos:]
                self._header_len = header_len
                self._total = total
                return
            out.append(self._parse(view, pos, header_len, total))
            pos += total

    def _header(self, mv: memoryview, pos: int, end: int) -> tuple[int, int] | None:
        """(fixed header length, packet length) of the packet at ``pos``, None if still incomplete."""
        first = mv[pos]
        ptype = first >> 4
        flags = first & 0x0F
        if ptype == 3:
            qos = (flags >> 1) & 0x03
            if qos == 3:
                raise MqttProtocolError("PUBLISH with QoS 3 [MQTT-3.3.1-4]")
            if not qos and flags & 0x08:
                raise MqttProtocolError("PUBLISH with DUP set at QoS 0 [MQTT-3.3.1-2]")
        else:
            want = _FLAGS[ptype]
            if want is None:
                raise MqttProtocolError(f"reserved packet type {ptype}")
            if flags != want and not (want == 2 and flags == 0x0A and self.protocol_level == 3):
                raise MqttProtocolError(f"invalid fixed-header flags {flags:#06b} for {_NAMES[ptype]}")
        if self._accepts is not None and ptype not in self._accepts:
            raise MqttProtocolError(f"{_NAMES[ptype]} not allowed from the {'client' if self.role == 'server' else 'server'}")
        remaining = 0
        shift = 0
        i = pos + 1
        while True:
            if i >= end:
                return None
            byte = mv[i]
            i += 1
            remaining |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
            if shift == 28:
                raise MqttProtocolError("remaining length longer than 4 bytes")
        fixed = _FIXED_LENGTH[ptype]
        if fixed is not None and remaining != fixed:
            raise MqttProtocolError(f"{_NAMES[ptype]} remaining length {remaining}, expected {fixed}")
        total = i - pos + remaining
        if total > self.max_packet_size:
            raise MqttProtocolError(f"{_NAMES[ptype]} of {total} bytes exceeds max_packet_size {self.max_packet_size}")
        return i - pos, total

    def _parse(self, mv: memoryview, pos: int, header_len: int, total: int) -> Packet:
        first = mv[pos]
        parse = _PARSERS[first >> 4]
        assert parse is not None  # _header refused reserved types
        packet = parse(mv, first & 0x0F, pos + header_len, pos + total)
        if type(packet) is Connect:
            self.protocol_level = packet.protocol_level
        return packet
