"""The C fan-out (media/native/fanout.c) against its Python twins: the same bytes, the same times.

ChunkWriter/SharedMessage: random sequences of writes, shared writes (several writers sharing
messages, as a stream's players do), chunk size changes and forgets give byte-identical output.
Timeline: random clocks (jumps, repeats, configurations) give the same player times. RtmpOut and
Fanout: delivery, refusal (paused, closing, queued output, over the bound) and membership.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iotvideo.media import accel
from iotvideo.media.frames import Codec, MediaFrame
from iotvideo.media.rtmp import chunk
from iotvideo.media.timeline import Timeline as PyTimeline

native = accel.native
pytestmark = pytest.mark.skipif(native is None or accel.RtmpOut is None, reason="C accelerator not built")

CSIDS = [2, 3, 4, 6, 63, 64, 319, 320, 65599]
payloads = st.binary(max_size=700)
timestamps = st.one_of(st.integers(0, 5000), st.integers(0xFFFFF0, 0x1000010), st.integers(-3, 2**33))
op = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(CSIDS), st.sampled_from([8, 9, 20]), st.integers(0, 3), timestamps,
              payloads),
    st.tuples(st.just("shared"), st.integers(0, 3), st.integers(0, 2), st.integers(0, 3), timestamps),
    st.tuples(st.just("chunk_size"), st.sampled_from([1, 7, 128, 4096, 65536])),
    st.tuples(st.just("forget"), st.sampled_from(CSIDS)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), op), max_size=40), st.lists(payloads, min_size=4, max_size=4))
def test_writer_gives_the_same_bytes(ops: list[tuple[int, tuple[Any, ...]]], bodies: list[bytes]) -> None:
    py_msgs = [chunk.SharedMessage(4 if i % 2 else 6, 8 if i % 2 else 9, b) for i, b in enumerate(bodies)]
    c_msgs = [native.SharedMessage(4 if i % 2 else 6, 8 if i % 2 else 9, b) for i, b in enumerate(bodies)]
    py_w = [chunk.ChunkWriter() for _ in range(3)]
    c_w = [native.ChunkWriter() for _ in range(3)]
    for who, o in ops:
        if o[0] == "write":
            _, csid, type_id, sid, ts, body = o
            assert c_w[who].write(csid, type_id, sid, ts, body) == py_w[who].write(csid, type_id, sid, ts, body)
        elif o[0] == "shared":
            _, m, _unused, sid, ts = o
            assert bytes(c_w[who].write_shared(c_msgs[m], sid, ts)) == bytes(py_w[who].write_shared(py_msgs[m], sid, ts))
        elif o[0] == "chunk_size":
            py_w[who].chunk_size = c_w[who].chunk_size = o[1]
            assert c_w[who].chunk_size == o[1]
        else:
            py_w[who].forget(o[1])
            c_w[who].forget(o[1])


def test_writer_refuses_what_python_refuses() -> None:
    for w in (chunk.ChunkWriter(), native.ChunkWriter()):
        with pytest.raises(ValueError):
            w.write(1, 9, 1, 0, b"x")  # chunk stream id out of range
        with pytest.raises(ValueError):
            w.write(70000, 9, 1, 0, b"x")
        with pytest.raises(ValueError):
            w.write(6, 9, 1, 0, bytes(0x1000000))  # over the 24-bit length
    with pytest.raises(OverflowError):
        native.ChunkWriter().write(6, 9, -1, 0, b"x")  # a message stream id is 32 bits (Python: where a type-0 header needs it)
    for cls in (chunk.SharedMessage, native.SharedMessage):
        with pytest.raises(ValueError):
            cls(6, 9, bytes(0x1000000))
    msg = native.SharedMessage(6, 9, b"abc")
    assert (msg.csid, msg.type_id, msg.payload, msg.length) == (6, 9, b"abc", 3)


def _frame(dts: int, cfg: bool = False) -> MediaFrame:
    return MediaFrame(Codec.H264, dts, dts, b"\x00\x00\x00\x01\x65" if not cfg else b"\x01cfg", keyframe=cfg, is_config=cfg)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.integers(-(2**40), 2**40), st.integers(0, 30000)), st.booleans()), max_size=60))
def test_timeline_gives_the_same_times(steps: list[tuple[int, bool]]) -> None:
    py, c = PyTimeline(), native.Timeline()
    for dts, cfg in steps:
        f = _frame(dts, cfg)
        assert c.at(f) == py.at(f)
        assert (c.base, c.last) == (py.base, py.last)


class Sink:
    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.fail = False

    def write(self, data: bytes) -> None:
        if self.fail:
            raise RuntimeError("transport closed")
        self.data.append(bytes(data))


def _player(messages: Any, sid: int = 1) -> tuple[Any, Sink, list[bytes], Any]:
    sink, pending, writer = Sink(), [], native.ChunkWriter(4096)
    out = native.RtmpOut(sink.write, pending, writer, sid, native.Timeline(), messages)
    return out, sink, pending, writer


def test_rtmp_out_writes_what_the_python_path_writes() -> None:
    msgs: dict[int, Any] = {}

    def message(f: MediaFrame) -> Any:
        if id(f) not in msgs:
            msgs[id(f)] = native.SharedMessage(6, 9, b"\x17\x01\x00\x00\x00" + f.data)
        return msgs[id(f)]

    frames = [_frame(1000 + 40 * i) for i in range(5)]
    out, sink, pending, _ = _player(message)
    py_w, py_t = chunk.ChunkWriter(4096), PyTimeline()
    expected = []
    for f in frames:
        assert out(f) is True
        py_msg = chunk.SharedMessage(6, 9, b"\x17\x01\x00\x00\x00" + f.data)
        expected.append(bytes(py_w.write_shared(py_msg, 1, py_t.at(f))))
    assert sink.data == expected
    assert (out.frames_out, out.bytes_out) == (5, sum(map(len, expected)))
    out.paused = True
    assert out(frames[0]) is False
    out.paused = False
    pending.append(b"queued control")
    assert out(frames[0]) is False  # what the connection queued goes first: the frame waits (queued)
    pending.clear()
    out.closing = True
    assert out(frames[0]) is False
    assert len(sink.data) == 5


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the failing transport's error
def test_fanout_writes_to_members_and_returns_those_that_refuse() -> None:
    built = []

    def message(f: MediaFrame) -> Any:
        built.append(f)
        return native.SharedMessage(6, 9, f.data)

    fan = native.Fanout()
    players = [_player(message) for _ in range(4)]
    subs = [object() for _ in players]
    for sub, (out, *_rest) in zip(subs, players):
        fan.add(sub, out, 1 << 20)
    fan.add(subs[0], players[0][0], 1 << 20)  # twice: once
    assert len(fan) == 4 and subs[2] in fan
    f = _frame(0)
    assert fan.send(f) is None
    assert built == [f]  # one message for all
    assert all(len(p[1].data) == 1 for p in players) and players[0][1].data == players[3][1].data
    players[1][0].paused = True
    players[2][2].append(b"x")
    players[3][1].fail = True
    v = fan.version
    refused = fan.send(_frame(40))
    assert refused == [subs[1], subs[2], subs[3]]
    assert len(fan) == 1 and subs[0] in fan and subs[1] not in fan and fan.version != v
    fan.add(subs[1], players[1][0], 3)  # a bound smaller than the frame: refused
    assert fan.send(_frame(80)) == [subs[1]]
    fan.discard(subs[0])
    assert len(fan) == 0
    fan.add(subs[0], players[0][0], 1 << 20)
    fan.clear()
    assert len(fan) == 0


def test_fanout_members_may_leave_while_it_sends() -> None:
    fan = native.Fanout()
    subs = [object(), object(), object()]

    def message(f: MediaFrame) -> Any:
        return native.SharedMessage(6, 9, f.data)

    players = [_player(message) for _ in subs]

    def write_and_leave(data: bytes) -> None:  # e.g. pause_writing closing another player
        players[0][1].data.append(data)
        fan.discard(subs[1])
        fan.clear()

    players[0] = (native.RtmpOut(write_and_leave, [], native.ChunkWriter(), 1, native.Timeline(), message),
                  players[0][1], [], None)
    for sub, p in zip(subs, players):
        fan.add(sub, p[0], 1 << 20)
    assert fan.send(_frame(0)) is None
    assert len(players[0][1].data) == 1 and not players[1][1].data and not players[2][1].data
    assert len(fan) == 0


def test_hub_feeds_a_player_from_its_fanout_while_it_keeps_up() -> None:
    """The hub scenario of test_hub's direct-delivery test with a C RtmpOut: the player joins the
    Fanout after its first direct frame, leaves it when refusing (the frame is queued, bounds apply),
    rejoins once its queue is drained, and leaves on a new publisher or when it closes."""
    from iotvideo.media.hub import HubConfig, StreamHub
    from iotvideo.media.rtmp.chunk import ChunkReader
    from test_fmp4_hls import video_config, video_frame

    def drain(sub: Any) -> list[MediaFrame]:
        out = []
        while (f := sub.get_nowait()) is not None:
            out.append(f)
        return out

    hub = StreamHub("cam/0", HubConfig(queue_max_bytes=1_000))
    pub = hub.attach_publisher()
    pub.publish(video_config())
    pub.publish(video_frame(0, key=True))
    sub = hub.subscribe()
    out, sink, pending, _ = _player(lambda f: native.SharedMessage(6, 9, f.data))
    sub.deliver_to(out)

    def written() -> list[bytes]:
        reader = ChunkReader()
        reader.chunk_size = 4096
        return [m.payload for m in reader.feed(b"".join(sink.data))]

    pub.publish(video_frame(40, key=False))
    assert sub.queued_frames == 3 and sub not in hub._fan  # the starting burst is queued: drained first
    drain(sub)
    pub.publish(video_frame(80, key=False))  # direct, through the subscription: joins the Fanout
    assert sub in hub._fan and written() == [video_frame(80, key=False).data]
    pub.publish(video_frame(120, key=False))  # from the Fanout
    assert written()[-1] == video_frame(120, key=False).data and sub.queued_frames == 0
    out.paused = True  # the socket is full: refused, queued, out of the Fanout
    pub.publish(video_frame(160, key=False))
    assert sub not in hub._fan and [f.dts for f in drain(sub)] == [160] and len(written()) == 2
    out.paused = False
    pub.publish(video_frame(200, key=False))
    assert sub in hub._fan and written()[-1] == video_frame(200, key=False).data
    pub.publish(video_frame(240, key=False, size=5_000))  # over the queue bound: refused by the Fanout too
    assert sub not in hub._fan and sub.lagging
    pub.publish(video_frame(1000, key=True))
    pub.publish(video_frame(1040, key=False))
    assert sub in hub._fan and written()[-2:] == [video_frame(1000, key=True).data, video_frame(1040, key=False).data]
    hub.attach_publisher(replace=True)  # a new source: everyone waits for its key frame
    assert len(hub._fan) == 0
    assert out.frames_out == len(written())
    sub.close()
    assert len(hub._fan) == 0 and sub not in hub._fan


def test_direct_sends_over_a_real_socket_keep_order_when_the_socket_fills() -> None:
    """On a real uvloop TCP connection: messages go straight to the socket while the transport holds
    nothing; when the peer stops reading, the kernel takes part of a message and the transport the
    rest, later messages go through the transport after it, and the peer reads exactly the chunk
    stream the Python writer gives for the same messages."""
    import asyncio
    import socket

    import uvloop

    from iotvideo.media.rtmp.chunk import ChunkReader

    bodies = [bytes([i]) * (10_000 + 997 * i) for i in range(60)]

    async def go() -> None:
        got = bytearray()
        reading = asyncio.Event()
        done = asyncio.Event()
        total = 0

        async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reading.wait()  # not reading at first: the socket fills
            while len(got) < total:
                got.extend(await reader.read(1 << 16))
            done.set()

        server = await asyncio.start_server(peer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        transport.set_write_buffer_limits(1 << 30)  # never paused: everything is accepted
        msgs = {id(b): native.SharedMessage(6, 9, b) for b in bodies}
        writer = native.ChunkWriter(4096)
        out = native.RtmpOut(transport.write, [], writer, 1, native.Timeline(), lambda f: msgs[id(f.data)],
                             transport=transport, fd=transport.get_extra_info("socket").fileno())
        frames = [MediaFrame(Codec.H264, 40 * i, 40 * i, b) for i, b in enumerate(bodies)]
        py_w, py_t = chunk.ChunkWriter(4096), PyTimeline()
        expected = b"".join(py_w.write(6, 9, 1, py_t.at(f), f.data) for f in frames)
        total = len(expected)
        for f in frames:
            assert out(f) is True
        assert out.direct_sends >= 1 and transport.get_write_buffer_size() > 0  # the socket filled up
        reading.set()
        await asyncio.wait_for(done.wait(), 10)
        assert bytes(got) == expected
        reader = ChunkReader()
        reader.chunk_size = 4096
        assert [m.payload for m in reader.feed(bytes(got))] == bodies
        assert out.bytes_out == total
        transport.close()
        server.close()

    uvloop.run(go())


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the failing message()'s error
def test_fanout_a_failing_message_builder_refuses_instead_of_raising() -> None:
    def broken(f: MediaFrame) -> Any:
        raise RuntimeError("builder bug")

    fan = native.Fanout()
    good = _player(lambda f: native.SharedMessage(6, 9, f.data))
    bad = _player(broken)
    a, b = object(), object()
    fan.add(a, good[0], 1 << 20)
    fan.add(b, bad[0], 1 << 20)
    assert fan.send(_frame(0)) == [b]  # the publisher's call does not fail; that player queues the frame
    assert len(good[1].data) == 1 and not bad[1].data and len(fan) == 1


class FakeTransport:
    """What FlvOut asks of a transport, without a socket (so every frame goes through write())."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.buffered = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.data.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered


def _dechunk(data: bytes) -> bytes:
    out, pos = bytearray(), 0
    while pos < len(data):
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end], 16)
        out += data[end + 2:end + 2 + size]
        assert data[end + 2 + size:end + 4 + size] == b"\r\n"
        pos = end + 4 + size
    return bytes(out)


def test_flv_out_writes_what_the_python_muxer_writes_one_chunk_per_frame() -> None:
    from iotvideo.media import flvtags
    from iotvideo.media.flv import FlvMuxer, frame_tail
    from iotvideo.media.hub import FrameMemo
    from test_fmp4_hls import audio_config, audio_frame, video_config, video_frame

    tails = FrameMemo(frame_tail)
    frames = [video_config(), audio_config(), video_frame(1000, True), audio_frame(1010), video_frame(1040, False),
              video_frame(1000 + 20_000, False), audio_frame(990)]  # a jump ahead; audio a little behind
    t = FakeTransport()
    out = native.FlvOut(t.write, native.Timeline(), tails, transport=t)
    for f in frames:
        assert out(f) is True
    assert len(t.data) == len(frames)  # one HTTP chunk each
    reference = FlvMuxer(tails=tails)
    assert _dechunk(b"".join(t.data)) == b"".join(reference.frame(f) for f in frames)
    assert out.frames_out == len(frames) and out.direct_sends == 0  # no socket: through write()
    t.buffered = (1 << 20) + 1
    assert out(video_frame(1080, False)) is False  # over max_buffer: queue it
    t.buffered, t.closing = 0, True
    assert out(video_frame(1080, False)) is False
    t.closing = False
    out.paused = True
    assert out(video_frame(1080, False)) is False
    out.paused = False

    def no_flv(f: MediaFrame) -> bytes:
        raise flvtags.FlvError("cannot be carried")

    skipping = native.FlvOut(t.write, native.Timeline(), no_flv, transport=t)
    before = len(t.data)
    assert skipping(video_frame(0, True)) is True and len(t.data) == before  # skipped, as the queued path does


def test_fanout_feeds_rtmp_and_flv_players_together() -> None:
    from iotvideo.media.flv import frame_tail

    fan = native.Fanout()
    rtmp = _player(lambda f: native.SharedMessage(6, 9, f.data))
    t = FakeTransport()
    flv = native.FlvOut(t.write, native.Timeline(), frame_tail, transport=t)
    a, b = object(), object()
    fan.add(a, rtmp[0], 1 << 20)
    fan.add(b, flv, 1 << 20)
    f = MediaFrame(Codec.AAC, 0, 0, b"\x21\x10")
    assert fan.send(f) is None
    assert len(rtmp[1].data) == 1 and len(t.data) == 1 and _dechunk(t.data[0])[0] == 8  # an audio tag
    t.buffered = 2 << 20
    assert fan.send(MediaFrame(Codec.AAC, 23, 23, b"\x21\x10")) == [b] and len(fan) == 1


class CountingTransport:
    """A transport over one end of a socketpair that counts how often RtmpOut asks how it stands."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.asked = 0
        self.closing = False
        self.data: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.data.append(bytes(data))

    def is_closing(self) -> bool:
        self.asked += 1
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0


def _socket_out(transport: CountingTransport) -> Any:
    return native.RtmpOut(transport.write, [], native.ChunkWriter(4096), 1, native.Timeline(),
                          lambda f: native.SharedMessage(6, 9, f.data), transport=transport,
                          fd=transport.sock.fileno())


def test_a_direct_sender_asks_the_transport_only_until_a_whole_send_and_after_others_wrote() -> None:
    import socket

    a, b = socket.socketpair()
    with a, b:
        t = CountingTransport(a)
        out = _socket_out(t)
        assert out(_frame(0)) is True and t.asked == 1 and out.known_empty
        assert out(_frame(40)) is True and out(_frame(80)) is True
        assert t.asked == 1 and out.direct_sends == 3  # it knew the transport held nothing
        out.known_empty = False  # the owner wrote to the transport itself
        assert out(_frame(120)) is True and t.asked == 2
        b.settimeout(5)
        got = bytearray()
        while len(got) < out.bytes_out:
            got += b.recv(1 << 16)
        reader = chunk.ChunkReader()
        reader.chunk_size = 4096
        assert [m.timestamp for m in reader.feed(bytes(got))] == [0, 40, 80, 120]


def test_a_direct_sender_sends_on_its_own_descriptor_never_on_a_reused_number() -> None:
    """The transport's descriptor may be closed and its number given to another socket before the
    player's connection learns of it: the out keeps a descriptor of its own, so nothing goes to the
    other socket; a send that fails on the dead socket asks the transport, and a closing transport
    takes nothing more. ``closing`` lets the out's descriptor go."""
    import os
    import socket

    a, b = socket.socketpair()
    t = CountingTransport(a)
    out = _socket_out(t)
    assert out(_frame(0)) is True
    number = a.fileno()
    b.close()
    a.close()  # what the transport does; the number is free again
    c, d = socket.socketpair()
    with c, d:
        if c.fileno() != number:  # make the number name the new socket, as a new connection would
            os.dup2(c.fileno(), number)
        try:
            t.closing = True  # (it knows by now; the out does not)
            assert out(_frame(40)) is True and t.asked == 2 and t.data == []
            d.setblocking(False)
            with pytest.raises(BlockingIOError):
                d.recv(1)  # nothing reached the socket that now has the old number
        finally:
            if c.fileno() != number:
                os.close(number)
    fds = len(os.listdir("/proc/self/fd"))
    out.closing = True
    assert len(os.listdir("/proc/self/fd")) == fds - 1 and out.closing
    assert out(_frame(80)) is False  # refused: it is closing
