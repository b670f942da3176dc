"""The C publish lane (media/native/lane.c: ``HubCore``, ``PublishLane``) against the pure-Python path.

``HubCore.count`` is compared with its twin (media/hubcore.py) under a fake clock. Then two real
``_RtmpPeer``s in one event loop, one with the lane as built and one with ``peer._lane = None`` (so
``StreamHub._publish`` runs for every frame), are fed the same publisher bytes and driven through
the same operations (C ``RtmpOut`` players that sometimes refuse, a slow Python subscriber, a sink
added and removed, codec changes, malformed tags, frames over the cache bounds); after every
operation everything observable must be equal: ``hub.stats()``, the cached GOP, the bytes each
player received, what queued subscribers and sinks got, the connection's counters. Then the lane's
stopping rules (deleteStream, a replaced publisher, a close in the middle of a read) and failures
inside the lane (the peer closes with "internal error"; a player's failing message() is a refusal).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import struct
import sys
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotvideo.media import accel
from iotvideo.media import hubcore as py_hubcore
from iotvideo.media.auth import StaticAuthorizer
from iotvideo.media.frames import Codec, MediaFrame
from iotvideo.media.hub import FrameMemo, HubConfig, HubRegistry, StreamHub, Subscription
from iotvideo.media.rtmp import RtmpClientConnection, StreamCreated, StreamStatus
from iotvideo.media.rtmp.messages import WindowAckSize
from iotvideo.media.rtmp_server import RtmpServer, _message, _RtmpPeer
from rtmp_support import FakeTransport, publish_on

pytestmark = pytest.mark.skipif(accel.PublishLane is None, reason="C publish lane not built (or IOTVIDEO_NATIVE=0)")

FUZZ = settings(
    max_examples=int(os.environ.get("IOTVIDEO_FUZZ_EXAMPLES", "60")), deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)  # fmt: skip

AVC_CONFIG = bytes([1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, 4]) + b"\x67\x64\x00\x1f" + bytes([1, 0, 2, 0x68, 0xEB])
AVC_CONFIG2 = AVC_CONFIG[:-1] + b"\xee"
HEVC_CONFIG = bytes([1, 1, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 0x5D, 0xF0, 0, 0xFC, 0xFD, 0xF8, 0xF8, 0, 0, 0x0F, 0])
AAC_CONFIGS = (b"\x12\x10", b"\x11\x90")

GOP_MAX_BYTES = 6000
GOP_MAX_MS = 1500
CONFIG = HubConfig(gop_max_bytes=GOP_MAX_BYTES, gop_max_ms=GOP_MAX_MS, cache_max_bytes=9000, queue_max_bytes=4000)


def fixed_random(n: int) -> bytes:
    return bytes(i * 7 % 251 for i in range(n))


def body(n: int, seed: int) -> bytes:
    """``n`` bytes, none zero (so Annex B bodies have no start codes), varying with ``seed``."""
    return bytes((i * 13 + seed) % 250 + 1 for i in range(n))


def nal(n: int, seed: int) -> bytes:
    return struct.pack(">I", n) + body(n, seed)


def avc_tag(key: bool, n: int, seed: int, cts: int = 0) -> bytes:
    return bytes((0x17 if key else 0x27, 1)) + cts.to_bytes(3, "big") + nal(n, seed)


def annexb_tag(key: bool, n: int, seed: int) -> bytes:
    return bytes((0x17 if key else 0x27, 1, 0, 0, 0)) + b"\x00\x00\x00\x01\x65" + body(n, seed)


def hevc_tag(key: bool, n: int, seed: int) -> bytes:
    return bytes((0x93 if key else 0xA3,)) + b"hvc1" + nal(n, seed)


def desc(f: MediaFrame) -> tuple[Any, ...]:
    return (f.codec, f.dts, f.pts, f.keyframe, f.is_config, f.data, f.sample_rate, f.channels)


class _FlakyMemo(FrameMemo[Any]):
    """The server's message memo, whose ``put`` fails while ``fail``."""

    fail = False

    def put(self, frame: MediaFrame, value: Any) -> None:
        if self.fail:
            raise RuntimeError("memo put failed")
        super().put(frame, value)


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.t


# --- HubCore.count: the C twin ---------------------------------------------------------------------


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 2_000_000), st.floats(0, 3, allow_nan=False)), max_size=60),
       st.floats(0, 5, allow_nan=False), st.booleans())  # fmt: skip
def test_count_is_the_python_count(steps: list[tuple[int, float]], start: float, reset: bool) -> None:
    pc, cc = Clock(start), Clock(start)
    py, c = py_hubcore.HubCore(pc), accel.HubCore(cc)
    assert type(c) is not py_hubcore.HubCore
    if reset:  # what attach_publisher does
        py.rate_start = c.rate_start = start
    for size, dt in steps:
        pc.t += dt
        cc.t += dt
        py.count(size)
        c.count(size)
        assert (c.frames_in, c.bytes_in, c.rate_bytes) == (py.frames_in, py.bytes_in, py.rate_bytes)
        assert (c.last_frame, c.rate_start, c.bitrate) == (py.last_frame, py.rate_start, py.bitrate)
    assert cc.calls == pc.calls == len(steps)  # the clock is read once per frame


def test_core_fields_default_like_python() -> None:
    py, c = py_hubcore.HubCore(), accel.HubCore()
    for name in py_hubcore.HubCore.__slots__:
        if name != "clock":
            assert getattr(c, name) == getattr(py, name), name
    c.count(10)  # the default clock (time.monotonic, read directly in C)
    assert c.frames_in == 1 and c.last_frame > 0
    with pytest.raises(TypeError):
        c.count("x")  # type: ignore[arg-type]

    def broken() -> float:
        raise RuntimeError("clock")

    c = accel.HubCore(broken)
    with pytest.raises(RuntimeError):
        c.count(1)
    assert c.frames_in == 0  # nothing counted when the clock failed


# --- the differential harness: a peer with the lane and one without -----------------------------


# the players' chunk sizes, by their place: the lane's messages come in two pieces (the tag's header,
# then the frame's data), and a chunk may end inside the first
CHUNK_SIZES = (128, 3, 4096)


class Player:
    """A C ``RtmpOut`` player (writes go to ``buf``) and the drain its ``_feed_player`` task would do."""

    def __init__(self, run: Run, max_queue_bytes: int, message: Callable[[MediaFrame], Any] | None = None) -> None:
        self.run = run
        self.sub = run.hub.subscribe(max_queue_bytes)
        self.buf = bytearray()
        self.writer = accel.ChunkWriter(CHUNK_SIZES[len(run.players) % len(CHUNK_SIZES)])
        self.timeline = accel.Timeline()
        self.message = message or run.server.messages
        self.pause_at: int | None = None  # the socket fills up: a write past this many bytes pauses the player
        self.out = accel.RtmpOut(self._write, [], self.writer, 1, self.timeline, self.message)
        self.sub.deliver_to(self.out)

    def _write(self, data: Any) -> None:
        self.buf += data
        if self.pause_at is not None and len(self.buf) >= self.pause_at:
            self.out.paused = True  # what pause_writing does, from inside the write
            self.pause_at = None

    def drain(self) -> None:
        if self.out.paused:
            return
        while (f := self.sub.get_nowait()) is not None:
            msg = self.message(f)
            if msg is not None:
                self.buf += self.writer.write_shared(msg, 1, self.timeline.at(f))

    def leave(self) -> None:
        self.out.closing = True
        self.sub.deliver_to(None)
        self.sub.close()

    def state(self) -> tuple[Any, ...]:
        s, o = self.sub, self.out
        return (bytes(self.buf), o.frames_out, o.bytes_out, s.dropped_frames, s.lag_count, s.queued_frames,
                s.queued_bytes, s.lagging, s.ended)  # fmt: skip


class Run:
    """One publishing ``_RtmpPeer`` over a fake transport, with (``lane``) or without the C lane."""

    def __init__(self, lane: bool, config: HubConfig = CONFIG) -> None:
        self.lane = lane
        self.clock = Clock(1000.0)
        self.wall = Clock(1_700_000_000.0)
        self.registry = HubRegistry(config, clock=self.clock, wall_clock=self.wall)
        self.server = RtmpServer(self.registry, StaticAuthorizer({"cam": "cam", "cam2": "cam2"}))
        self.server.messages = self.memo = _FlakyMemo(_message)  # (before the peer: its lane holds it)
        self.peer = _RtmpPeer(self.server, 1)
        self.transport = FakeTransport()
        self.peer.connection_made(self.transport)  # type: ignore[arg-type]
        if lane:
            assert self.peer._lane is not None
        else:
            self.peer._lane = None  # the pure-Python path
        self.client = RtmpClientConnection("live", "rtmp://127.0.0.1/live", random=fixed_random)
        self.sid = 0
        self.hub: StreamHub = None  # type: ignore[assignment]
        self.players: list[Player] = []
        self.slow: Subscription | None = None
        self.slow_got: list[tuple[Any, ...]] = []
        self.sink_got: list[tuple[Any, ...]] = []
        self.sink_remove: Callable[[], None] | None = None
        self.python_frames = 0  # frames that went through StreamHub._publish

    async def start(self) -> None:
        self.sid = await publish_on(self.peer, self.transport, self.client)
        hub = self.registry.get("cam")
        assert hub is not None
        self.hub = hub
        publish = hub._publish

        def counted(frame: MediaFrame) -> None:
            self.python_frames += 1
            publish(frame)

        hub._publish = counted  # type: ignore[method-assign]
        assert (len(self.peer._lane) == 1) if self.lane else self.peer._lane is None

    def feed(self, data: bytes) -> None:
        """As the transport would: to its protocol (the lane while armed)."""
        if data:
            self.transport.deliver(self.peer, data)

    async def publish(self, data: bytes, name: str, sid: int | None = None) -> int:
        """Feed ``data`` (ending with whatever the client queued), then publish ``name`` on stream ``sid``
        (a new stream when None) and let the authorization run; return the stream id."""
        client = self.client
        if sid is None:
            client.create_stream()
        else:
            client.publish(sid, name)
        data += client.data_to_send()
        for _ in range(50):
            if data:
                self.feed(data)
                data = b""
            await asyncio.sleep(0)
            back, self.transport.out = bytes(self.transport.out), bytearray()
            for ev in client.receive_data(back) if back else []:
                if isinstance(ev, StreamCreated):
                    client.publish(ev.stream_id, name)
                    data = client.data_to_send()
                elif isinstance(ev, StreamStatus) and ev.code == "NetStream.Publish.Start":
                    return ev.stream_id
        raise AssertionError("publish did not complete")

    def state(self) -> dict[str, Any]:
        hub, core, snap = self.hub, self.hub._core, self.peer.snapshot()
        stats = dataclasses.asdict(hub.stats())
        gop = core.gop
        return {
            "stats": stats,
            "gop": [desc(f) for f in hub.gop()],
            "core": (core.frames_in, core.bytes_in, core.rate_bytes, core.rate_start, core.bitrate, core.last_frame,
                     core.cache_bytes, core.has_video, None if gop is None else (gop.nbytes, len(gop.frames))),
            "peer": (snap.frames_in, snap.bad_tags, snap.closed_reason, snap.role, snap.bytes_in, snap.bytes_out,
                     self.peer.closing, self.transport.closed, bytes(self.transport.out)),
            "players": [p.state() for p in self.players],
            "slow": (list(self.slow_got), None if self.slow is None else
                     (self.slow.dropped_frames, self.slow.lag_count, self.slow.queued_frames, self.slow.lagging)),
            "sink": list(self.sink_got),
            "publishing": hub.publishing,
        }  # fmt: skip


class Script:
    """Turns operations into publisher bytes and harness actions, the same for both runs."""

    def __init__(self) -> None:
        self.dts = 0
        self.seed = 0

    def tag(self, op: tuple[Any, ...]) -> list[tuple[bool, int, bytes]]:
        """(is_video, timestamp, payload) of the messages ``op`` publishes."""
        kind = op[0]
        self.seed += 1
        s = self.seed
        if kind == "vcfg":
            return [(True, self.dts, b"\x17\x00\x00\x00\x00" + (AVC_CONFIG, AVC_CONFIG2)[op[1]])]
        if kind == "acfg":
            return [(False, self.dts, b"\xaf\x00" + AAC_CONFIGS[op[1]])]
        if kind == "hcfg":
            return [(True, self.dts, b"\x90hvc1" + HEVC_CONFIG)]
        if kind in ("key", "inter", "annexb", "hevc", "audio", "pcma"):
            self.dts = max(0, self.dts + op[2])
        if kind == "key":
            return [(True, self.dts, avc_tag(True, op[1], s, op[3]))]
        if kind == "inter":
            return [(True, self.dts, avc_tag(False, op[1], s, op[3]))]
        if kind == "annexb":
            return [(True, self.dts, annexb_tag(op[3], op[1], s))]
        if kind == "hevc":
            return [(True, self.dts, hevc_tag(op[3], op[1], s))]
        if kind == "audio":
            return [(False, self.dts, b"\xaf\x01" + body(op[1], s))]
        if kind == "pcma":
            return [(False, self.dts, bytes((0x72 if op[3] else 0x70,)) + body(op[1], s))]
        if kind == "big":  # over gop_max_bytes
            self.dts += 40
            return [(True, self.dts, avc_tag(op[1], GOP_MAX_BYTES + 10, s))]
        if kind == "jump":  # past gop_max_ms
            self.dts += GOP_MAX_MS + 1
            return [(True, self.dts, avc_tag(False, 50, s))]
        if kind == "bad":
            return [(True, self.dts, b"\x27\x01")]  # truncated
        if kind == "unsupported":
            return [(True, self.dts, b"\x1f\x01\x00\x00\x00")]  # codec id 15: the peer closes
        if kind == "nothing":
            return [(True, self.dts, b"\x27\x02\x00\x00\x00"), (False, self.dts, b"\xaf\x01")]  # no frame
        raise AssertionError(kind)


MEDIA = ("vcfg", "acfg", "hcfg", "key", "inter", "annexb", "hevc", "audio", "pcma", "big", "jump", "bad", "nothing",
         "unsupported")

_inter = st.tuples(st.just("inter"), st.integers(1, 700), st.integers(-10, 60), st.sampled_from([0, 0, 40]))
_audio = st.tuples(st.just("audio"), st.integers(1, 300), st.integers(-30, 30))
_other = st.one_of(
    st.tuples(st.just("key"), st.integers(1, 900), st.integers(0, 60), st.sampled_from([0, 40])),
    st.tuples(st.sampled_from(["vcfg", "acfg"]), st.integers(0, 1)),
    st.tuples(st.sampled_from(["hcfg", "jump", "bad", "nothing"])),
    st.tuples(st.just("big"), st.booleans()),
    st.tuples(st.sampled_from(["annexb", "hevc"]), st.integers(1, 300), st.integers(0, 60), st.booleans()),
    st.tuples(st.just("pcma"), st.integers(1, 200), st.integers(0, 30), st.booleans()),
    st.tuples(st.sampled_from(["pause", "resume", "drain", "leave"]), st.integers(0, 2)),
    st.tuples(st.just("join"), st.sampled_from([600, 4000, 1 << 20])),
    st.tuples(st.sampled_from(["slow_on", "slow_off", "slow_drain", "sink_on", "sink_off", "cmd"])),
    st.tuples(st.just("tick"), st.floats(0, 2.5, allow_nan=False)),
    st.tuples(st.just("autopause"), st.integers(0, 2), st.integers(0, 3000)),
    st.tuples(st.just("window"), st.integers(500, 20_000)),
)
# segments: a run of ordinary frames (what the lane takes) in reads cut anywhere, then one other operation
_segment = st.tuples(
    st.lists(st.one_of(_inter, _inter, _audio), max_size=14), st.integers(0, 3000), st.lists(_other, max_size=2)
).map(lambda seg: [*seg[0], ("send", seg[1]), *seg[2]])
_ops = st.lists(_segment, max_size=10).map(lambda segs: [op for seg in segs for op in seg])


def _apply(run: Run, script: Script, op: tuple[Any, ...], pending: bytearray) -> None:
    """One operation on ``run``: media ops add to ``pending`` (one read later); others send it first."""
    kind = op[0]
    client = run.client
    if kind in MEDIA:
        for video, ts, payload in script.tag(op):
            (client.send_video if video else client.send_audio)(run.sid, ts, payload)
        pending += client.data_to_send()
        return
    if kind == "cmd":  # an event in the same read, after media
        client.create_stream()
        pending += client.data_to_send()
        return
    if kind == "delete":  # the stream ends, in the middle of a read
        client.delete_stream(run.sid)
        pending += client.data_to_send()
        return
    if kind == "garbage":  # bytes that are not what the chunk stream expects (a protocol error, usually)
        pending += op[1]
        return
    if kind == "send":  # what is pending, in two reads cut at op[1]
        cut = min(op[1], len(pending))
        run.feed(bytes(pending[:cut]))
        run.feed(bytes(pending[cut:]))
        pending.clear()
        run.clock.t += 0.25
        for p in run.players:  # what each player's task does next: drain its queue (unless paused)
            p.drain()
        return
    run.feed(bytes(pending))
    pending.clear()
    run.clock.t += 0.1
    players = run.players
    if kind in ("pause", "autopause", "resume", "drain", "leave"):
        if op[1] < len(players):
            p = players[op[1]]
            if kind == "pause":
                p.out.paused = True
            elif kind == "autopause":
                p.pause_at = len(p.buf) + op[2]
            elif kind == "resume":
                p.out.paused = False
                p.drain()
            elif kind == "drain":
                p.drain()
            else:
                p.leave()
    elif kind == "join":
        if len(players) < 3 and not run.hub.closed:
            players.append(Player(run, op[1]))
    elif kind == "slow_on":
        if run.slow is None:
            run.slow = run.hub.subscribe(1500)
    elif kind == "slow_drain" or kind == "slow_off":
        if run.slow is not None:
            while (f := run.slow.get_nowait()) is not None:
                run.slow_got.append(desc(f))
            if kind == "slow_off":
                run.slow.close()
                run.slow = None
    elif kind == "sink_on":
        if run.sink_remove is None:
            run.sink_remove = run.hub.add_sink(lambda f: run.sink_got.append(desc(f)))
    elif kind == "sink_off":
        if run.sink_remove is not None:
            run.sink_remove()
            run.sink_remove = None
    elif kind == "tick":
        run.clock.t += op[1]
    elif kind == "window":  # the publisher asks for acknowledgements every op[1] bytes
        client._send_control(WindowAckSize(op[1]))
        run.feed(client.data_to_send())
    else:
        raise AssertionError(kind)


def _check_same(a: Run, b: Run, where: str) -> None:
    sa, sb = a.state(), b.state()
    for k in sa:
        assert sa[k] == sb[k], f"{k} differs after {where}"


async def _twins(config: HubConfig = CONFIG) -> tuple[Run, Run]:
    a, b = Run(lane=True, config=config), Run(lane=False, config=config)
    await a.start()
    await b.start()
    return a, b


WARM: list[tuple[Any, ...]] = [("vcfg", 0), ("acfg", 0), ("key", 300, 0, 0), ("send", 0), ("drain", 0)]


def _drive(ops: list[tuple[Any, ...]], players: int = 1, config: HubConfig = CONFIG) -> tuple[Run, Run]:
    async def go() -> tuple[Run, Run]:
        a, b = await _twins(config)
        runs = (a, b)
        for r in runs:
            for _ in range(players):
                r.players.append(Player(r, 1 << 20))
        _check_same(a, b, "setup")
        scripts = [Script(), Script()]
        pendings = [bytearray(), bytearray()]
        for i, op in enumerate([*ops, ("send", 0), ("drain", 0), ("drain", 1), ("drain", 2), ("slow_drain",)]):
            for r, s, p in zip(runs, scripts, pendings):
                _apply(r, s, op, p)
            assert pendings[0] == pendings[1]
            _check_same(a, b, f"op {i} {op[:2]}")
        return a, b

    return asyncio.run(go())


@FUZZ
@given(_ops, st.booleans(), st.integers(0, 2), st.sampled_from([0, 2500]),
       st.one_of(st.none(), st.tuples(st.sampled_from(["unsupported", "delete"])),
                 st.tuples(st.just("garbage"), st.binary(min_size=1, max_size=30))), _segment)  # fmt: skip
def test_lane_publishes_exactly_like_python(
    ops: list[tuple[Any, ...]], warm: bool, players: int, preroll: int, end: tuple[Any, ...] | None,
    tail: list[tuple[Any, ...]],
) -> None:
    """Random publisher sequences and player/sink/subscriber changes; ``end`` (the stream ends: an
    unsupported codec, deleteStream, garbage) in the middle of a read, followed by more."""
    ops = [*WARM, *ops] if warm else ops
    if end is not None:
        ops = [*ops, *_steady(2), end, *tail]
    _drive(ops, players, dataclasses.replace(CONFIG, preroll_ms=preroll))


def _steady(n: int, gap: int = 40, size: int = 200) -> list[tuple[Any, ...]]:
    return [("inter", size, gap, 0) for _ in range(n)]


def test_lane_takes_ordinary_frames_in_c_and_equals_python() -> None:
    """Not vacuous: with one C player and nothing else, the lane takes the inter frames itself."""
    ops: list[tuple[Any, ...]] = [("vcfg", 0), ("acfg", 0), ("key", 500, 0, 0), ("send", 0), ("drain", 0),
                                  *_steady(30, gap=30, size=100), ("audio", 100, 5), ("audio", 100, 5), ("send", 0),
                                  ("tick", 1.5), *_steady(10, gap=30, size=100), ("send", 333)]  # fmt: skip
    a, b = _drive(ops)
    frames = a.hub.stats().frames_in
    assert frames == 45 and b.python_frames == 45
    # the configurations and the key frame (queued: the player drains them), then the first inter frame
    # (the player joins the Fanout) and the next (the hub recomputes ``fast``); the C core took the rest
    assert a.python_frames == 5
    assert a.peer._lane.frames_in == 45 and a.hub._core.bitrate > 0
    assert a.peer._lane.frames_plain == 40  # (all that C took: not one frame object made for them)
    p = a.players[0]
    assert p.out.frames_out == 42 and len(p.buf) > 42 * 100  # 42 frames directly; the first three drained
    assert a.state()["gop"][0][0] is Codec.H264 and len(a.hub.gop()) == 2 + 43


def _apply_all(runs: tuple[Run, Run], ops: list[tuple[Any, ...]]) -> None:
    """``ops`` on both runs, without comparing them between operations (which reads their GOPs)."""
    scripts, pendings = [Script(), Script()], [bytearray(), bytearray()]
    for op in ops:
        for r, s, p in zip(runs, scripts, pendings):
            _apply(r, s, op, p)


def test_plain_frames_stay_records_until_python_reads_the_gop() -> None:
    """The lane caches a plain frame as a record of its tag; the GOP's frames (the same MediaFrames
    the Python path cached, in order) are made when Python first reads them, and a frame appended
    later by the Python path lands after them. A plain key frame starts a GOP as its first record."""
    async def go() -> None:
        a, b = await _twins()
        for r in (a, b):
            r.players.append(Player(r, 1 << 20))
        _apply_all((a, b), [*WARM, *_steady(2), ("send", 0), ("drain", 0), *_steady(20), ("audio", 50, 5),
                            ("send", 100)])  # fmt: skip
        gop = a.hub._core.gop
        assert a.peer._lane.frames_plain == 21 and gop.records == 21 and b.hub._core.gop.records == 0
        assert gop.nbytes == b.hub._core.gop.nbytes and a.hub._core.cache_bytes == b.hub._core.cache_bytes
        _check_same(a, b, "reading the GOP")
        assert gop.records == 0 and len(gop.frames) == 1 + 2 + 21
        _apply_all((a, b), [*_steady(3, size=50), ("send", 0), ("sink_on",), *_steady(2, size=50), ("send", 0),
                            ("sink_off",), *_steady(3, size=50), ("send", 0)])  # fmt: skip
        assert a.hub._core.gop is gop
        # the Python path's (two for the sink, one after it, as the hub sees it is gone), then the lane's
        assert gop.records == 2
        _check_same(a, b, "after the sink")
        _apply_all((a, b), [("key", 400, 40, 0), *_steady(4, size=50), ("send", 0)])
        key_gop = a.hub._core.gop
        assert key_gop is not gop and key_gop.records == 5 and a.peer._lane.frames_plain == 21 + 3 + 2 + 5
        _check_same(a, b, "a plain key frame")  # a new GOP: the key frame its first record
        assert key_gop.frames[0].keyframe and len(key_gop.frames) == 5
        assert list(a.hub._gops) == [key_gop]  # (no history kept: the old GOP let go)

    asyncio.run(go())


def test_plain_frames_of_every_size_are_cached_exactly() -> None:
    """Records of many sizes (the GOP's blocks grow from 16 KiB to 256 KiB; a larger frame takes the
    object path) give the GOP the Python path caches."""
    config = dataclasses.replace(CONFIG, gop_max_bytes=8 << 20, cache_max_bytes=16 << 20, queue_max_bytes=4 << 20)
    sizes = [10, 16_000, 20_000, 70_000, 5, 150_000, 262_000, 300_000, 40_000, 100]
    ops: list[tuple[Any, ...]] = [*WARM, *_steady(2), ("send", 0), ("drain", 0),
                                  *[("inter", n, 40, 0) for n in sizes], ("audio", 30, 5), ("send", 7)]  # fmt: skip
    a, b = _drive(ops, 1, config)
    assert a.peer._lane.frames_plain == len(sizes) - 1 + 1  # all but the one over 256 KiB, and the audio frame
    assert len(a.hub.gop()) == 2 + 1 + 2 + len(sizes) + 1


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the failing write's error
def test_a_player_whose_write_fails_during_a_plain_send_queues_the_frame() -> None:
    """A player's write fails while the lane sends a plain frame: the player leaves the Fanout and its
    subscription queues the frame, made for it, as when the Python path sends it."""
    class Failing(Player):
        fail_at: int | None = 2000
        failed_from: str | None = None  # what wrote: the hub's Python path, or C
        counts: tuple[int, int] | None = None  # the lane's frames_in and frames_plain then

        def _write(self, data: Any) -> None:
            if self.fail_at is not None and len(self.buf) >= self.fail_at:
                self.fail_at = None
                python = any(f.function == "_publish" for f in inspect.stack(0))
                self.failed_from = "python" if python else "c"
                lane = self.run.peer._lane
                self.counts = (lane.frames_in, lane.frames_plain) if lane is not None else None
                raise OSError("connection reset")
            super()._write(data)

    async def go() -> None:
        a, b = await _twins()
        for r in (a, b):
            r.players.append(Failing(r, 1 << 20))
        _apply_all((a, b), [*WARM, *_steady(2), ("send", 0), ("drain", 0), *_steady(20, size=100), ("send", 0)])
        assert a.players[0].failed_from == "c" and b.players[0].failed_from == "python"
        frames_in, plain = a.players[0].counts
        assert plain > 0 and frames_in == 5 + plain  # every frame after the first five plain, this one too
        _check_same(a, b, "the failure")  # what each player got: the frame from its queue, then the rest
        _apply_all((a, b), [("drain", 0), *_steady(3), ("send", 0), ("drain", 0)])
        _check_same(a, b, "after the failure")

    asyncio.run(go())


@pytest.mark.parametrize("case", ["paused", "slow", "sink", "big", "jump", "codec", "annexb", "cache"])
def test_lane_hands_over_what_it_must_not_take(case: str) -> None:
    """Each reason the C core declines a frame, alone: the Python path runs, with the same result."""
    head: list[tuple[Any, ...]] = [("vcfg", 0), ("acfg", 0), ("key", 500, 0, 0), ("send", 0), ("drain", 0), *_steady(3)]
    mid: dict[str, list[tuple[Any, ...]]] = {
        "paused": [("pause", 0), *_steady(5), ("send", 0), ("resume", 0)],
        "slow": [("slow_on",), *_steady(5), ("slow_off",)],
        "sink": [("sink_on",), *_steady(5), ("sink_off",)],
        "big": [("big", False), *_steady(3)],
        "jump": [*_steady(3), ("jump",), *_steady(3)],
        "codec": [("pcma", 100, 5, True), ("audio", 100, 5), ("hcfg",), ("hevc", 300, 40, True),
                  ("hevc", 100, 40, False), *_steady(2)],
        "annexb": [("annexb", 100, 40, False), ("pcma", 100, 5, False), *_steady(2)],
        "cache": [("key", 900, 40, 0), ("key", 900, 40, 0), *[("inter", 900, 10, 0) for _ in range(8)]],
    }  # fmt: skip
    a, b = _drive([*head, *mid[case], *_steady(4), ("send", 0)])
    assert b.python_frames == b.hub.stats().frames_in > 0
    assert a.python_frames < a.hub.stats().frames_in  # the lane was used around the case


@pytest.mark.parametrize("over", [0, 1])
@pytest.mark.parametrize("bound", ["bytes", "ms", "cache"])
def test_cache_bounds_exactly_at_and_one_past_the_limit(bound: str, over: int) -> None:
    """At a bound the GOP stays cached (C takes the frame); one byte or millisecond past it the Python
    path drops the GOP (C must hand the frame over)."""
    config = dataclasses.replace(CONFIG, cache_max_bytes=3000, preroll_ms=10_000)
    lead: list[tuple[Any, ...]] = [("vcfg", 0), ("key", 296, 0, 0), ("send", 0), ("drain", 0),
                                   *_steady(3, gap=10, size=96)]  # fmt: skip
    if bound == "bytes":  # 300 + 3 * 100 + x == 6000 (+ over)
        ops = [*lead, ("inter", 6000 - 600 - 4 + over, 10, 0)]
    elif bound == "ms":  # 30 + x == 1500 (+ over)
        ops = [*lead, ("inter", 96, GOP_MAX_MS - 30 + over, 0)]
    else:  # a second GOP: 600 + (300 + 100 + 100 + x) == 3000 (+ over), the first GOP then goes
        ops = [*lead, ("key", 296, 10, 0), ("inter", 96, 10, 0), ("send", 0), ("inter", 96, 10, 0),
               ("inter", 3000 - 1100 - 4 + over, 10, 0)]  # fmt: skip
    a, b = _drive([*ops, ("send", 0)], 1, config)
    frames = a.hub.stats().frames_in
    assert a.python_frames < frames == b.python_frames
    gop = a.hub.gop()
    if bound == "cache":
        assert len(a.hub._gops) == (2 if not over else 1) and gop[1].keyframe and len(gop) == 5
    elif over:
        assert gop == [] and a.hub._core.cache_bytes == 0
    else:
        assert len(gop) == 1 + 5 and a.hub._core.cache_bytes == sum(len(f.data) for f in gop[1:])


# --- the lane stops for a stream that is no longer published ----------------------------------------


def _frames(run: Run, n: int, start_dts: int = 0) -> bytes:
    for i in range(n):
        run.client.send_video(run.sid, start_dts + 40 * i, avc_tag(False, 100, i))
    return run.client.data_to_send()


def _warm(run: Run) -> None:
    """Configuration, key frame and one inter frame: the C player is then in the hub's Fanout."""
    c = run.client
    c.send_video(run.sid, 0, b"\x17\x00\x00\x00\x00" + AVC_CONFIG)
    c.send_video(run.sid, 0, avc_tag(True, 300, 0))
    c.send_video(run.sid, 0, avc_tag(False, 100, 0))
    run.feed(c.data_to_send())
    for p in run.players:
        p.drain()
    run.feed(_frames(run, 1, 10))  # taken directly: the player joins the Fanout
    run.feed(_frames(run, 1, 20))  # the hub recomputes what the fast path may assume
    assert run.hub._core.fast and len(run.hub._fan) == len(run.players)


def test_no_frame_reaches_the_hub_after_delete_stream_in_the_same_read() -> None:
    async def go() -> None:
        for run in await _twins():
            run.players.append(Player(run, 1 << 20))
            _warm(run)
            before = run.hub.stats().frames_in
            data = _frames(run, 3, 100)
            run.client.delete_stream(run.sid)
            data += run.client.data_to_send() + _frames(run, 4, 300)
            run.feed(data)
            assert run.hub.stats().frames_in == before + 3
            assert not run.hub.publishing and run.peer.snapshot().frames_in == before + 3
            assert run.peer._lane is None or len(run.peer._lane) == 0
            assert run.players[0].sub._ended  # the stream ended for its player
            run.feed(_frames(run, 2, 600))  # and later reads
            assert run.peer.snapshot().frames_in == before + 3

    asyncio.run(go())


def test_no_frame_reaches_the_hub_after_the_publisher_is_replaced_mid_read() -> None:
    """A player's write replaces the publisher (another connection took the stream) in the middle of
    a read the lane is handling: the frames after it must not be taken for the old publisher."""

    async def go() -> None:
        results = []
        for run in await _twins(dataclasses.replace(CONFIG, replace_publisher=True)):
            run.players.append(Player(run, 1 << 20))
            _warm(run)
            hub, player = run.hub, run.players[0]
            seen = {"n": 0}
            replaced: list[Any] = []
            write = player.buf.extend

            def write_then_replace(data: Any) -> None:
                write(data)
                seen["n"] += 1
                if seen["n"] == 2:
                    replaced.append(hub.attach_publisher())  # evicts the peer's publisher

            player.sub.deliver_to(None)  # (leaves the Fanout: it joins again with the new output)
            player.out = accel.RtmpOut(write_then_replace, [], player.writer, 1, player.timeline, run.server.messages)
            player.sub.deliver_to(player.out)
            player.drain()
            run.feed(_frames(run, 1, 60))  # joins the Fanout again with the new output
            seen["n"] = 0
            run.feed(_frames(run, 6, 100))
            assert replaced and hub.publisher is replaced[0]
            assert run.peer.closing and run.peer.stats.closed_reason == "replaced by another publisher"
            assert hub.stats().frames_in == 0  # the new publisher's counters: nothing of the old one's
            assert hub.gop() == [] and hub._core.cache_bytes == 0
            assert run.peer._lane is None or len(run.peer._lane) == 0
            results.append((bytes(player.buf), run.peer.snapshot().frames_in, player.out.frames_out))
        assert results[0] == results[1]

    asyncio.run(go())


def test_lane_declines_frames_of_a_publisher_that_is_not_the_hubs() -> None:
    """PublishLane alone: a stream added with a publisher the hub no longer has goes to ``slow``."""
    clock = Clock(10.0)
    hub = StreamHub("cam", CONFIG, clock=clock)
    pub = hub.attach_publisher()
    memo: FrameMemo[Any] = FrameMemo(_message)
    out_buf = bytearray()
    sub = hub.subscribe(1 << 20)
    out = accel.RtmpOut(out_buf.extend, [], accel.ChunkWriter(), 1, accel.Timeline(), memo)
    sub.deliver_to(out)
    pub.publish(MediaFrame(Codec.H264, 0, 0, AVC_CONFIG, is_config=True))
    pub.publish(MediaFrame(Codec.H264, 0, 0, nal(50, 1), keyframe=True))
    while (f := sub.get_nowait()) is not None:
        pass
    pub.publish(MediaFrame(Codec.H264, 40, 40, nal(50, 2)))  # direct: the output joins the Fanout
    assert len(hub._fan) == 1
    slow: list[Any] = []
    fallback: list[Any] = []
    reader = accel.ChunkReader()
    lane = accel.PublishLane(reader, memo, lambda *a: slow.append(a), lambda *a: fallback.append(a), (6, 9), (4, 8))
    lane.add(1, pub, hub._core)
    writer = accel.ChunkWriter()

    def wire(n: int, dts: int) -> bytes:
        return b"".join(bytes(writer.write(6, 9, 1, dts + 40 * i, avc_tag(False, 60, i))) for i in range(n))

    pub.publish(MediaFrame(Codec.H264, 80, 80, nal(50, 3)))  # the Python path: fan_version/fast computed
    assert hub._core.fast
    frames = hub._core.frames_in
    assert lane.feed(wire(3, 120)) == []
    assert slow == [] and hub._core.frames_in == frames + 3 and out.frames_out == 2 + 3  # 40, 80, then the core
    other = StreamHub("other", CONFIG).attach_publisher()
    lane.add(1, other, hub._core)  # not the hub's publisher
    assert lane.feed(wire(2, 240)) == []
    assert len(slow) == 2 and hub._core.frames_in == frames + 3 and out.frames_out == 5
    lane.add(1, pub, hub._core)
    pub.close()  # the hub has no publisher any more
    assert lane.feed(wire(1, 400)) == []
    assert len(slow) == 3 and hub._core.frames_in == frames + 3
    lane.discard(1)
    rest = lane.feed(wire(2, 500))
    assert len(rest) == 2 and len(slow) == 3 and lane.frames_in == 6  # not its stream any more: handed back
    assert fallback == []


@pytest.mark.parametrize("how", ["unsupported", "close_in_write"])
def test_no_frame_reaches_the_hub_after_the_connection_closes_mid_read(how: str) -> None:
    async def go() -> None:
        results = []
        for run in await _twins():
            run.players.append(Player(run, 1 << 20))
            _warm(run)
            player = run.players[0]
            before = run.hub.stats().frames_in
            if how == "unsupported":
                data = _frames(run, 2, 100)
                run.client.send_video(run.sid, 200, b"\x1f\x01\x00\x00\x00")  # codec id 15: closes
                data += run.client.data_to_send() + _frames(run, 4, 300)
                run.feed(data)
                assert run.peer.stats.closed_reason.startswith("unsupported codec")
            else:
                write = player.buf.extend
                calls = {"n": 0}

                def write_then_close(data: Any) -> None:
                    write(data)
                    calls["n"] += 1
                    if calls["n"] == 2:
                        run.peer.close("test closes")

                player.sub.deliver_to(None)
                player.out = accel.RtmpOut(write_then_close, [], player.writer, 1, player.timeline, run.server.messages)
                player.sub.deliver_to(player.out)
                run.feed(_frames(run, 1, 60))
                calls["n"] = 0
                before = run.hub.stats().frames_in
                run.feed(_frames(run, 6, 100))
                assert run.peer.stats.closed_reason == "test closes"
            assert run.peer.closing and not run.hub.publishing
            assert run.peer._lane is None or len(run.peer._lane) == 0
            after = run.peer.snapshot().frames_in
            run.feed(_frames(run, 3, 900))
            assert run.peer.snapshot().frames_in == after
            results.append((bytes(player.buf), after - before, run.peer.stats.bad_tags))
        assert results[0] == results[1]
        assert results[0][1] == 2

    asyncio.run(go())


def test_two_published_streams_on_one_connection_interleaved_in_one_read() -> None:
    async def go() -> None:
        a, b = await _twins()
        states = []
        for run in (a, b):
            run.players.append(Player(run, 1 << 20))
            _warm(run)
            sid2 = await run.publish(b"", "cam2")
            hub2 = run.registry.get("cam2")
            assert hub2 is not None and hub2.publishing and sid2 != run.sid
            assert run.peer._lane is None or len(run.peer._lane) == 2
            sub2 = hub2.subscribe(1 << 20)
            buf2 = bytearray()
            out2 = accel.RtmpOut(buf2.extend, [], accel.ChunkWriter(), 1, accel.Timeline(), run.server.messages)
            sub2.deliver_to(out2)
            c = run.client
            c.send_video(sid2, 0, b"\x17\x00\x00\x00\x00" + AVC_CONFIG2)
            c.send_video(sid2, 0, avc_tag(True, 200, 7))
            run.feed(c.data_to_send())
            while sub2.get_nowait() is not None:
                pass
            for i in range(12):  # interleaved, one read
                c.send_video(run.sid if i % 2 else sid2, 100 + 20 * i, avc_tag(False, 50 + i, i))
                c.send_audio(sid2 if i % 3 else run.sid, 100 + 20 * i, b"\xaf\x01" + body(20, i))
            run.feed(c.data_to_send())
            c.delete_stream(run.sid)  # the first stream ends in the middle of the next read
            data = c.data_to_send()
            for i in range(6):
                c.send_video(run.sid, 400 + 20 * i, avc_tag(False, 60, i))
                c.send_video(sid2, 400 + 20 * i, avc_tag(False, 70, i))
            run.feed(_frames(run, 2, 380) + data + c.data_to_send())
            states.append((run.state(), dataclasses.asdict(hub2.stats()), [desc(f) for f in hub2.gop()], bytes(buf2),
                           out2.frames_out, run.python_frames))  # fmt: skip
        assert states[0][:5] == states[1][:5]
        stats2 = states[0][1]
        assert stats2["frames_in"] == 2 + 6 + 8 + 6 and states[0][0]["stats"]["publishing"] is False

    asyncio.run(go())


def test_republishing_on_the_same_stream_id_after_close_stream() -> None:
    async def go() -> None:
        a, b = await _twins()
        states = []
        for run in (a, b):
            run.players.append(Player(run, 1 << 20))
            _warm(run)
            hub = run.hub
            c = run.client
            c._send_command(5, run.sid, "closeStream", 0.0, None)
            data = _frames(run, 2, 100)  # (after closeStream: dropped)
            sid = await run.publish(c.data_to_send() + data, "cam", run.sid)
            assert sid == run.sid and hub.publishing and run.registry.get("cam") is hub
            assert run.peer._lane is None or len(run.peer._lane) == 1
            player = Player(run, 1 << 20)
            run.players.append(player)
            c.send_video(sid, 0, b"\x17\x00\x00\x00\x00" + AVC_CONFIG)
            c.send_video(sid, 0, avc_tag(True, 100, 1))
            run.feed(c.data_to_send())
            player.drain()
            for k in range(4):
                run.feed(_frames(run, 3, 40 + 200 * k))
            states.append(run.state())
        assert states[0] == states[1]
        assert states[0]["stats"]["frames_in"] == 14
        assert a.python_frames < 14  # the lane took frames for the new publisher

    asyncio.run(go())


# --- failures inside the lane ----------------------------------------------------------------------


def _failing_put(run: Run) -> None:
    """The server's message memo fails to store a message, while the only player refuses frames."""
    _warm(run)
    run.players[0].out.paused = True  # refuses: the message is stored for its queue (memo.put)
    run.memo.fail = True


def test_a_failing_message_memo_put_closes_the_peer_with_internal_error() -> None:
    async def go() -> None:
        for run in await _twins():
            run.players.append(Player(run, 1 << 20))
            _failing_put(run)
            before = run.hub.stats().frames_in
            run.feed(_frames(run, 3, 100))
            assert run.peer.closing and run.transport.closed
            assert run.peer.stats.closed_reason == "internal error"
            assert not run.hub.publishing
            assert run.hub.stats().frames_in - before <= 1  # the rest of the read is dropped

    asyncio.run(go())


def test_a_failing_message_memo_put_closes_the_peer_with_internal_error() -> None:
    """A frame a player refused is memoised for its queue after the hub took it (C) or before (Python):
    when that fails (out of memory, say) both close the connection as an internal error; only the
    hub's counters then differ by that one frame (documented in docs/media.md)."""

    async def go() -> None:
        states = []
        for run in await _twins():
            run.players.append(Player(run, 1 << 20))
            _failing_put(run)
            run.feed(_frames(run, 3, 100))
            assert run.peer.closing and run.peer.stats.closed_reason == "internal error"
            states.append(run.hub.stats().frames_in)
        assert states[0] == states[1] + 1

    asyncio.run(go())


def test_a_failing_offer_closes_the_peer_with_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        results = []
        for run in await _twins():
            run.players.append(Player(run, 1 << 20))
            _warm(run)
            run.players[0].out.paused = True  # refused: the hub offers it to the subscription, which fails
            real = Subscription._offer

            def offer(self: Subscription, frame: MediaFrame, sync: bool, direct_ok: bool = True) -> None:
                if frame.dts >= 100:
                    raise RuntimeError("offer failed")
                real(self, frame, sync, direct_ok)

            with monkeypatch.context() as m:
                m.setattr(Subscription, "_offer", offer)
                run.feed(_frames(run, 3, 100))
            assert run.peer.closing and run.transport.closed
            assert run.peer.stats.closed_reason == "internal error"
            results.append((run.hub.publishing, run.players[0].state()[1:]))
        assert results[0] == results[1]

    asyncio.run(go())


def test_a_players_failing_message_is_a_refusal_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """A player whose message() raises refuses the frame (reported as unraisable); the frame is queued
    for it, the others get it, the publisher goes on: the same with and without the lane."""

    async def go() -> None:
        states = []
        for run in await _twins():
            fail = {"on": False}
            messages = run.server.messages

            def message(frame: MediaFrame) -> Any:
                if fail["on"]:
                    raise RuntimeError("message failed")
                return messages(frame)

            run.players.append(Player(run, 1 << 20))
            run.players.append(Player(run, 1 << 20, message=message))
            _warm(run)
            run.players[1].drain()
            run.feed(_frames(run, 2, 60))
            fail["on"] = True
            run.feed(_frames(run, 3, 200))
            assert not run.peer.closing
            queued = run.players[1].sub.queued_frames
            fail["on"] = False
            run.players[1].drain()
            run.feed(_frames(run, 2, 400))
            states.append((run.state(), queued))
        (a, qa), (b, qb) = states
        assert a == b and qa == qb == 3
        assert a["stats"]["frames_in"] == 12

    reported: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: reported.append(u.exc_value))
    asyncio.run(go())
    # one refusal per run: the player then leaves the Fanout and its queue takes the rest (message() not called)
    assert len(reported) == 2 and all(str(e) == "message failed" for e in reported)


def test_a_lane_read_from_inside_another_lanes_read_keeps_both_reads_intact() -> None:
    """Lanes share one read buffer; a lane that reads while another's read is being handled (here:
    from the first one's callback) reads into a buffer of its own, and the first one's frames after
    the callback still carry their own bytes."""
    import socket

    def wire(seeds: list[int]) -> bytes:  # (a publisher's: a writer of its own)
        writer = accel.ChunkWriter(65536)
        return b"".join(bytes(writer.write(6, 9, 1, 40 * s, avc_tag(False, 300, s))) for s in seeds)

    got: dict[str, list[bytes]] = {"a": [], "b": []}
    lanes: dict[str, Any] = {}
    socks = {k: socket.socketpair() for k in "ab"}
    try:
        def slow(name: str) -> Callable[..., None]:
            def take(sid: int, frame: MediaFrame, msg: Any) -> None:
                got[name].append(frame.data)
                if name == "a" and len(got["a"]) == 1:
                    lanes["b"].readable()  # another lane reads now, while a's read is in hand
            return take

        for k in "ab":
            hub = StreamHub(k, CONFIG)
            hub.attach_publisher()
            other = StreamHub("x" + k, CONFIG).attach_publisher()  # not the hub's: every frame goes to slow()
            reader = accel.ChunkReader()
            reader.chunk_size = 65536  # (what the publisher announced: each tag comes in one chunk)
            lane = accel.PublishLane(reader, FrameMemo(_message), slow(k), lambda *a: None, (6, 9), (4, 8))
            lane.add(1, other, hub._core)
            lane.arm(1 << 30, lambda *a: None, None)
            lane.set_fd(socks[k][0].fileno())
            socks[k][1].setblocking(True)
            lanes[k] = lane
        socks["a"][1].sendall(wire([1, 2, 3]))
        socks["b"][1].sendall(wire([7, 8]))
        lanes["a"].readable()
        assert got["a"] == [nal(300, s) for s in (1, 2, 3)]
        assert got["b"] == [nal(300, s) for s in (7, 8)]
    finally:
        for pair in socks.values():
            for s in pair:
                s.close()
