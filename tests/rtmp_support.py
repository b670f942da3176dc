"""Helpers shared by the RTMP server tests: a fake transport to drive an ``_RtmpPeer`` without a socket,
and our own RTMP client over real sockets."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from iotvideo.media.rtmp import Connected, MediaData, RtmpClientConnection, StreamCreated, StreamStatus


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


async def publish_on(peer: Any, transport: FakeTransport, client: RtmpClientConnection, name: str = "cam") -> int:
    """Run ``client`` through handshake, connect, createStream and publish ``name`` against ``peer``
    (an ``_RtmpPeer`` on ``transport``); the stream id once the server said Publish.Start."""
    for _ in range(100):
        out = client.data_to_send()
        if out:
            transport.deliver(peer, out)
        await asyncio.sleep(0)  # the authorizer's task
        back, transport.out = bytes(transport.out), bytearray()
        for ev in client.receive_data(back) if back else []:
            if isinstance(ev, Connected):
                client.create_stream()
            elif isinstance(ev, StreamCreated):
                client.publish(ev.stream_id, name)
            elif isinstance(ev, StreamStatus) and ev.code == "NetStream.Publish.Start":
                return ev.stream_id
    raise AssertionError("publish did not complete")


class RtmpPeer:
    """Our own RTMP client over asyncio streams to a real server (for crafted publishers and light players)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: RtmpClientConnection) -> None:
        self.reader, self.writer, self.conn = reader, writer, conn
        self.backlog: deque[Any] = deque()

    @classmethod
    async def open(cls, port: int) -> RtmpPeer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        peer = cls(reader, writer, RtmpClientConnection("live", f"rtmp://127.0.0.1:{port}/live"))
        await peer.until(Connected)
        return peer

    async def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())
        await self.writer.drain()

    async def next_event(self) -> Any:
        while not self.backlog:
            await self.flush()
            data = await self.reader.read(65536)
            self.backlog.extend(self.conn.receive_data(data))
            if not data and not self.backlog:
                raise ConnectionError("closed by the server")
        return self.backlog.popleft()

    async def until(self, kind: type, timeout: float = 10) -> Any:
        """The next event of type ``kind`` (those before it are dropped, those after it kept)."""
        async with asyncio.timeout(timeout):
            while not isinstance(ev := await self.next_event(), kind):
                pass
            return ev

    async def stream(self, action: str, name: str) -> tuple[int, StreamStatus]:
        self.conn.create_stream()
        sid = (await self.until(StreamCreated)).stream_id
        getattr(self.conn, action)(sid, name)
        return sid, await self.until(StreamStatus)

    async def closed_by_server(self, timeout: float = 5) -> bool:
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
            return True
        except ConnectionError:  # reset: closed too
            return True
        except TimeoutError:
            return False

    async def video_frames(self, n: int, timeout: float = 10) -> None:
        """Until ``n`` video messages came (a player's)."""
        got = 0
        async with asyncio.timeout(timeout):
            while got < n:
                ev = await self.next_event()
                got += isinstance(ev, MediaData) and ev.kind == "video"

    async def acknowledged(self, nbytes: int, timeout: float = 5) -> None:
        """Until the server acknowledged ``nbytes`` of what this publisher sent."""
        async with asyncio.timeout(timeout):
            while self.conn.peer_acknowledged < nbytes:
                data = await self.reader.read(65536)
                assert data, "closed by the server"
                self.conn.receive_data(data)

    def close(self) -> None:
        self.writer.close()
