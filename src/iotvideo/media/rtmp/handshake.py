"""The RTMP handshake (simple scheme), sans-IO: ``ServerHandshake`` (C0/C1 → S0/S1/S2, then C2) and ``ClientHandshake``.

The server never validates or produces the "complex" (digest) handshake. Clients that send a
digest in C1 (FFmpeg and OBS when publishing) accept a simple answer: S2 echoes C1 and bytes
4–7 of S1 are zero. Those zeros matter: FFmpeg as a *player* tries to validate a server digest
whenever S1 carries a version there, and gives up when it finds none.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Final

__all__ = ["HANDSHAKE_SIZE", "RTMP_VERSION", "ClientHandshake", "HandshakeError", "ServerHandshake"]

RTMP_VERSION: Final = 3
HANDSHAKE_SIZE: Final = 1536
_RANDOM_SIZE: Final = HANDSHAKE_SIZE - 8


class HandshakeError(ValueError):
    """The peer's handshake is not RTMP version 3 (e.g. encrypted RTMPE, or not RTMP at all)."""


def _packet(time_ms: int, random: Callable[[int], bytes]) -> bytes:
    """A C1/S1: 4-byte time, 4 zero bytes (the simple scheme), 1528 random bytes."""
    filler = random(_RANDOM_SIZE)
    if len(filler) != _RANDOM_SIZE:
        raise ValueError(f"random({_RANDOM_SIZE}) returned {len(filler)} bytes")
    return struct.pack(">II", time_ms & 0xFFFFFFFF, 0) + filler


def _check_version(version: int) -> None:
    if version != RTMP_VERSION:
        hint = " (encrypted RTMPE is not supported)" if version in (6, 8, 9) else ""
        raise HandshakeError(f"RTMP version {version} requested, only {RTMP_VERSION} is spoken{hint}")


class _Handshake:
    __slots__ = ("_buf", "_need", "_out", "done", "peer_version")

    def __init__(self, need: int) -> None:
        self._buf = bytearray()
        self._need = need
        self._out: list[bytes] = []
        self.done = False
        self.peer_version = b"\x00\x00\x00\x00"  # bytes 4-7 of C1/S1: zero, or the complex-scheme version

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete handshake packet held."""
        return len(self._buf)

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes | bytearray | memoryview) -> int:
        """Consume handshake bytes from ``data``; return how many were used (the rest are chunks)."""
        used = 0
        size = len(data)
        while not self.done and used < size:
            take = min(self._need - len(self._buf), size - used)
            self._buf += data[used : used + take]
            used += take
            if len(self._buf) == self._need:
                packet = bytes(self._buf)
                self._buf.clear()
                self._step(packet)
        return used

    def _step(self, packet: bytes) -> None:
        raise NotImplementedError


class ServerHandshake(_Handshake):
    """Server side: C0+C1 in → S0+S1+S2 out; C2 in (content ignored) → ``done``."""

    __slots__ = ("_s1",)

    def __init__(self, *, time_ms: int = 0, random: Callable[[int], bytes] = os.urandom) -> None:
        super().__init__(1 + HANDSHAKE_SIZE)
        self._s1 = _packet(time_ms, random)

    def _step(self, packet: bytes) -> None:
        if self._need == 1 + HANDSHAKE_SIZE:
            _check_version(packet[0])
            c1 = packet[1:]
            self.peer_version = c1[4:8]
            self._out += (b"\x03", self._s1, c1)  # S0, S1, S2 = echo of C1
            self._need = HANDSHAKE_SIZE
        else:
            self.done = True  # C2 should echo S1; clients using the digest scheme do not, and that is fine


class ClientHandshake(_Handshake):
    """Client side: C0+C1 queued at once; S0+S1+S2 in → C2 (echo of S1) out, ``done``."""

    __slots__ = ()

    def __init__(self, *, time_ms: int = 0, random: Callable[[int], bytes] = os.urandom) -> None:
        super().__init__(1 + 2 * HANDSHAKE_SIZE)
        self._out += (b"\x03", _packet(time_ms, random))

    def _step(self, packet: bytes) -> None:
        _check_version(packet[0])
        s1 = packet[1 : 1 + HANDSHAKE_SIZE]
        self.peer_version = s1[4:8]
        self._out.append(s1)  # C2; S2 is not checked: servers differ in what they echo
        self.done = True
