"""MQTT 3.1.1 control packets as frozen dataclasses, and ``encode(packet) -> bytes``."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, TypeAlias

from .topics import valid_topic_filter

__all__ = [
    "CONNACK_ACCEPTED",
    "CONNACK_BAD_USERNAME_OR_PASSWORD",
    "CONNACK_IDENTIFIER_REJECTED",
    "CONNACK_NOT_AUTHORIZED",
    "CONNACK_SERVER_UNAVAILABLE",
    "CONNACK_UNACCEPTABLE_PROTOCOL_VERSION",
    "MAX_REMAINING_LENGTH",
    "SUBACK_FAILURE",
    "ConnAck",
    "Connect",
    "Disconnect",
    "Packet",
    "PingReq",
    "PingResp",
    "PubAck",
    "PubComp",
    "PubRec",
    "PubRel",
    "Publish",
    "SubAck",
    "Subscribe",
    "UnsubAck",
    "Unsubscribe",
    "encode",
]

CONNACK_ACCEPTED: Final = 0x00
CONNACK_UNACCEPTABLE_PROTOCOL_VERSION: Final = 0x01
CONNACK_IDENTIFIER_REJECTED: Final = 0x02
CONNACK_SERVER_UNAVAILABLE: Final = 0x03
CONNACK_BAD_USERNAME_OR_PASSWORD: Final = 0x04
CONNACK_NOT_AUTHORIZED: Final = 0x05
SUBACK_FAILURE: Final = 0x80
MAX_REMAINING_LENGTH: Final = 268_435_455


@dataclass(frozen=True, slots=True, kw_only=True)
class Connect:
    """CONNECT. Level 4 is "MQTT" (3.1.1); level 3 is "MQIsdp" (3.1). The password is kept out of repr."""

    packet_type: ClassVar[int] = 1
    protocol_name: str = "MQTT"
    protocol_level: int = 4
    client_id: str = ""
    username: str | None = None
    password: bytes | None = field(default=None, repr=False)
    keepalive: int = 60
    clean_session: bool = True
    will_topic: str | None = None
    will_payload: bytes | None = None
    will_qos: int = 0
    will_retain: bool = False


@dataclass(frozen=True, slots=True)
class ConnAck:
    packet_type: ClassVar[int] = 2
    session_present: bool = False
    return_code: int = CONNACK_ACCEPTED


@dataclass(frozen=True, slots=True)
class Publish:
    """PUBLISH; ``packet_id`` is None exactly when ``qos`` is 0."""

    packet_type: ClassVar[int] = 3
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None


@dataclass(frozen=True, slots=True)
class PubAck:
    packet_type: ClassVar[int] = 4
    packet_id: int


@dataclass(frozen=True, slots=True)
class PubRec:
    packet_type: ClassVar[int] = 5
    packet_id: int


@dataclass(frozen=True, slots=True)
class PubRel:
    packet_type: ClassVar[int] = 6
    packet_id: int


@dataclass(frozen=True, slots=True)
class PubComp:
    packet_type: ClassVar[int] = 7
    packet_id: int


@dataclass(frozen=True, slots=True)
class Subscribe:
    """SUBSCRIBE; ``topics`` is a non-empty tuple of (topic filter, requested QoS)."""

    packet_type: ClassVar[int] = 8
    packet_id: int
    topics: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class SubAck:
    """SUBACK; one return code (0, 1, 2 or SUBACK_FAILURE) per requested filter."""

    packet_type: ClassVar[int] = 9
    packet_id: int
    return_codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    packet_type: ClassVar[int] = 10
    packet_id: int
    topics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UnsubAck:
    packet_type: ClassVar[int] = 11
    packet_id: int


@dataclass(frozen=True, slots=True)
class PingReq:
    packet_type: ClassVar[int] = 12


@dataclass(frozen=True, slots=True)
class PingResp:
    packet_type: ClassVar[int] = 13


@dataclass(frozen=True, slots=True)
class Disconnect:
    packet_type: ClassVar[int] = 14


Packet: TypeAlias = (
    Connect
    | ConnAck
    | Publish
    | PubAck
    | PubRec
    | PubRel
    | PubComp
    | Subscribe
    | SubAck
    | Unsubscribe
    | UnsubAck
    | PingReq
    | PingResp
    | Disconnect
)

# --- encoding -------------------------------------------------------------------------------------

_U16 = struct.Struct("!H").pack
_ACK = struct.Struct("!BBH").pack
_ONE_BYTE = tuple(bytes((i,)) for i in range(256))
_PINGREQ: Final = b"\xc0\x00"
_PINGRESP: Final = b"\xd0\x00"
_DISCONNECT: Final = b"\xe0\x00"
_CONNACK: Final = {
    (sp, rc): bytes((0x20, 2, int(sp), rc)) for sp in (False, True) for rc in range(6) if not (sp and rc)
}
_SUBACK_CODES: Final = frozenset((0, 1, 2, SUBACK_FAILURE))


def _fixed_header(first: int, remaining: int) -> bytes:
    if remaining < 0x80:
        return bytes((first, remaining))
    if remaining > MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length {remaining} exceeds the MQTT maximum {MAX_REMAINING_LENGTH}")
    out = bytearray((first,))
    while True:
        digit = remaining & 0x7F
        remaining >>= 7
        if remaining:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def _string(value: str, what: str) -> bytes:
    if "\x00" in value:
        raise ValueError(f"{what} contains U+0000")
    raw = value.encode()
    if len(raw) > 0xFFFF:
        raise ValueError(f"{what} longer than 65535 UTF-8 bytes")
    return _U16(len(raw)) + raw


def _binary(value: bytes, what: str) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"{what} longer than 65535 bytes")
    return _U16(len(value)) + bytes(value)


def _packet_id(pid: int | None) -> int:
    if pid is None or not 0 < pid <= 0xFFFF:
        raise ValueError(f"packet_id must be 1..65535, not {pid!r}")
    return pid


def _qos(qos: int, what: str) -> int:
    if qos not in (0, 1, 2):
        raise ValueError(f"{what} must be 0, 1 or 2, not {qos!r}")
    return qos


def _encode_connect(p: Connect) -> bytes:
    level = p.protocol_level
    if not 0 <= level <= 0xFF:
        raise ValueError(f"protocol_level out of range: {level!r}")
    if not 0 <= p.keepalive <= 0xFFFF:
        raise ValueError(f"keepalive out of range: {p.keepalive!r}")
    if not p.client_id and not p.clean_session:
        raise ValueError("an empty client_id requires clean_session [MQTT-3.1.3-7]")
    flags = 0x02 if p.clean_session else 0
    tail = [_string(p.client_id, "client_id")]
    if p.will_topic is not None:
        if p.will_payload is None:
            raise ValueError("will_topic given without will_payload")
        if not p.will_topic or "+" in p.will_topic or "#" in p.will_topic:
            raise ValueError(f"invalid will_topic: {p.will_topic!r}")
        flags |= 0x04 | (_qos(p.will_qos, "will_qos") << 3) | (0x20 if p.will_retain else 0)
        tail.append(_string(p.will_topic, "will_topic"))
        tail.append(_binary(p.will_payload, "will_payload"))
    elif p.will_payload is not None or p.will_qos or p.will_retain:
        raise ValueError("will_payload/will_qos/will_retain need a will_topic")
    if p.username is not None:
        flags |= 0x80
        tail.append(_string(p.username, "username"))
    if p.password is not None:
        if p.username is None and level >= 4:
            raise ValueError("a password requires a username [MQTT-3.1.2-22]")
        flags |= 0x40
        tail.append(_binary(p.password, "password"))
    body = b"".join((_string(p.protocol_name, "protocol_name"), bytes((level, flags)), _U16(p.keepalive), *tail))
    return _fixed_header(0x10, len(body)) + body


def _encode_connack(p: ConnAck) -> bytes:
    try:
        return _CONNACK[(bool(p.session_present), p.return_code)]
    except (KeyError, TypeError):
        raise ValueError(f"invalid CONNACK: {p!r} (codes 0..5; session_present only with 0)") from None


def _encode_publish(p: Publish) -> bytes:
    topic = p.topic
    if not topic or "+" in topic or "#" in topic or "\x00" in topic:
        raise ValueError(f"invalid topic name: {topic!r}")
    raw = topic.encode()
    if len(raw) > 0xFFFF:
        raise ValueError("topic longer than 65535 UTF-8 bytes")
    qos = p.qos
    if qos == 0:
        if p.packet_id is not None:
            raise ValueError("a QoS 0 PUBLISH has no packet_id")
        if p.dup:
            raise ValueError("DUP must be 0 for QoS 0 [MQTT-3.3.1-2]")
        head = _U16(len(raw)) + raw
    else:
        _qos(qos, "qos")
        head = b"".join((_U16(len(raw)), raw, _U16(_packet_id(p.packet_id))))
    payload = p.payload
    first = 0x30 | (qos << 1) | (0x08 if p.dup else 0) | (0x01 if p.retain else 0)
    return b"".join((_fixed_header(first, len(head) + len(payload)), head, payload))


def _ack_encoder(first: int) -> Callable[[Any], bytes]:
    def encode_ack(p: Any) -> bytes:
        return _ACK(first, 2, _packet_id(p.packet_id))

    return encode_ack


def _encode_subscribe(p: Subscribe) -> bytes:
    if not p.topics:
        raise ValueError("SUBSCRIBE needs at least one topic filter [MQTT-3.8.3-3]")
    parts = [_U16(_packet_id(p.packet_id))]
    for topic_filter, qos in p.topics:
        if not valid_topic_filter(topic_filter):
            raise ValueError(f"invalid topic filter: {topic_filter!r}")
        parts.append(_string(topic_filter, "topic filter"))
        parts.append(_ONE_BYTE[_qos(qos, "requested qos")])
    body = b"".join(parts)
    return _fixed_header(0x82, len(body)) + body


def _encode_suback(p: SubAck) -> bytes:
    codes = p.return_codes
    if not codes or not _SUBACK_CODES.issuperset(codes):
        raise ValueError(f"SUBACK return codes must be non-empty, each 0, 1, 2 or 0x80: {codes!r}")
    body = _U16(_packet_id(p.packet_id)) + bytes(codes)
    return _fixed_header(0x90, len(body)) + body


def _encode_unsubscribe(p: Unsubscribe) -> bytes:
    if not p.topics:
        raise ValueError("UNSUBSCRIBE needs at least one topic filter [MQTT-3.10.3-2]")
    parts = [_U16(_packet_id(p.packet_id))]
    for topic_filter in p.topics:
        if not valid_topic_filter(topic_filter):
            raise ValueError(f"invalid topic filter: {topic_filter!r}")
        parts.append(_string(topic_filter, "topic filter"))
    body = b"".join(parts)
    return _fixed_header(0xA2, len(body)) + body


_ENCODERS: Final[dict[type, Callable[[Any], bytes]]] = {
    Connect: _encode_connect,
    ConnAck: _encode_connack,
    Publish: _encode_publish,
    PubAck: _ack_encoder(0x40),
    PubRec: _ack_encoder(0x50),
    PubRel: _ack_encoder(0x62),
    PubComp: _ack_encoder(0x70),
    Subscribe: _encode_subscribe,
    SubAck: _encode_suback,
    Unsubscribe: _encode_unsubscribe,
    UnsubAck: _ack_encoder(0xB0),
    PingReq: lambda _p: _PINGREQ,
    PingResp: lambda _p: _PINGRESP,
    Disconnect: lambda _p: _DISCONNECT,
}


def encode(packet: Packet) -> bytes:
    """The wire bytes of ``packet``; ``ValueError`` if its fields cannot form a valid 3.1.1 packet."""
    try:
        encoder = _ENCODERS[packet.__class__]
    except KeyError:
        raise TypeError(f"not an MQTT packet: {packet!r}") from None
    return encoder(packet)
