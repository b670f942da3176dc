"""Helpers shared by the RTMP server tests that drive an ``_RtmpPeer`` without a socket."""

from __future__ import annotations

from typing import Any


class FakeTransport:
    """Just enough of an asyncio transport for ``_RtmpPeer``: what it writes is kept in ``out``.
    Give it data as a transport does, to its current protocol: ``deliver(peer, data)``."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False
        self.protocol: Any = None  # set by set_protocol: the armed lane, or the peer again (None: not called)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closed

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    abort = close

    def deliver(self, peer: Any, data: bytes) -> None:
        """``data`` read from the socket: to the protocol set last, else ``peer`` (the one given to connection_made)."""
        (peer if self.protocol is None else self.protocol).data_received(data)
