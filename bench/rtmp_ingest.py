"""In-process RTMP ingest cost: recorded publisher bytes through the server's publish path, timed.

One command: ``.venv/bin/python bench/rtmp_ingest.py``. It records what a publisher sends for
the bench clip (``bench/media.py``'s 720p 2 Mbit/s H.264, 25 fps; encoded with ffmpeg once and
cached), then replays those bytes into a real ``_RtmpPeer`` (the asyncio protocol of
``iotvideo.media.rtmp_server``) over a fake transport, each read given to the transport's
current protocol as a transport does (the C ``PublishLane`` once armed, else the peer):
chunk reader → FLV parse → hub, with one player that keeps up (the C ``RtmpOut``, its chunked
messages written to nowhere; in pure Python a subscriber taking each frame's shared message).
Nothing touches the network, so the figure is repeatable.

Cases: the publisher's chunk size 65536 with one read per frame (what ``bench/media.py`` does),
4096 (OBS, FFmpeg) and 128 (the default: many type-3 continuation chunks) with 16 KB reads.
Prints µs per frame and ms of CPU per MB ingested (best of several rounds), the same for the ingest
core alone (chunk reader and FLV tag parsing on the same bytes, no connection or hub), the machine, and which
implementation ran (``accel.describe()``): ``--python`` runs the pure-Python path (IOTVIDEO_NATIVE=0),
``--python-ingest`` only the ingest part (chunk reader, FLV tag parsing) in Python.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

if "--python" in sys.argv[1:]:  # before iotvideo is imported: accel reads it once
    os.environ["IOTVIDEO_NATIVE"] = "0"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from media import encode_clip, load_clip

from iotvideo.media import accel, flvtags, rtmp_server
from iotvideo.media.auth import StaticAuthorizer
from iotvideo.media.hub import HubRegistry
from iotvideo.media.rtmp import (
    Connected,
    RtmpClientConnection,
    StreamCreated,
    StreamStatus,
)
from iotvideo.media.rtmp.chunk import ChunkReader
from iotvideo.media.rtmp_server import RtmpServer, _RtmpPeer


class FakeTransport:
    """Just enough of ``asyncio.Transport`` for ``_RtmpPeer``: writes are kept while ``keep``, else counted."""

    def __init__(self) -> None:
        self.keep = True
        self.kept = bytearray()
        self.written = 0
        self.closed = False
        self.protocol: Any = None  # set by set_protocol (None: the one given to connection_made)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.written += len(data)
        if self.keep:
            self.kept += data

    def take(self) -> bytes:
        data = bytes(self.kept)
        self.kept.clear()
        return data

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


async def publish_setup(client: RtmpClientConnection, peer: _RtmpPeer, transport: FakeTransport) -> int:
    """Run ``client`` through handshake, connect, createStream and publish against ``peer``; return the stream id."""
    for _ in range(100):
        out = client.data_to_send()
        if out:
            (peer if transport.protocol is None else transport.protocol).data_received(out)
        await asyncio.sleep(0)  # the authorizer's task
        for ev in client.receive_data(transport.take()) if transport.kept else []:
            if isinstance(ev, Connected):
                client.create_stream()
            elif isinstance(ev, StreamCreated):
                client.publish(ev.stream_id, "cam")
            elif isinstance(ev, StreamStatus) and ev.code == "NetStream.Publish.Start":
                return ev.stream_id
    raise RuntimeError("publish setup did not complete")


def new_peer() -> tuple[HubRegistry, RtmpServer, _RtmpPeer, FakeTransport]:
    registry = HubRegistry()
    server = RtmpServer(registry, StaticAuthorizer({"cam": "cam"}))
    peer = _RtmpPeer(server, 1)
    transport = FakeTransport()
    peer.connection_made(transport)  # type: ignore[arg-type]
    return registry, server, peer, transport


async def record(clip: Any, chunk_size: int, loops: int) -> list[bytes]:
    """The publisher's media bytes (config, then ``loops`` times the clip), one ``bytes`` per frame."""
    client = RtmpClientConnection("live", "rtmp://127.0.0.1/live", chunk_size=chunk_size)
    _, _, peer, transport = new_peer()
    sid = await publish_setup(client, peer, transport)
    peer.close("done")
    client.send_video(sid, 0, clip.config)
    writes = [client.data_to_send()]
    for loop in range(loops):
        for dts, _, body in clip.frames:
            client.send_video(sid, loop * clip.duration_ms + dts, body)
            writes.append(client.data_to_send())
    return writes


WARM_READS = 40  # reads fed before the player joins (the first key frame is in them)


def reads_of(writes: list[bytes], read_size: int) -> list[bytes]:
    """The writes as a socket would deliver them: one read per write (0) or fixed-size reads."""
    if not read_size:
        return writes
    data = b"".join(writes)
    return [data[i : i + read_size] for i in range(0, len(data), read_size)]


async def one_round(chunk_size: int, reads: list[bytes]) -> tuple[float, int]:
    """Replay ``reads`` into a fresh publishing ``_RtmpPeer``; return (CPU seconds, frames in)."""
    registry, server, peer, transport = new_peer()
    client = RtmpClientConnection("live", "rtmp://127.0.0.1/live", chunk_size=chunk_size)
    await publish_setup(client, peer, transport)
    transport.keep = False
    hub = registry.get("cam")
    assert hub is not None and peer.stats.role == "publisher", "publish was not accepted"

    def feed(part: list[bytes]) -> None:
        for data in part:
            (peer if transport.protocol is None else transport.protocol).data_received(data)

    head = WARM_READS if len(reads) > 2 * WARM_READS else 0
    feed(reads[:head])  # the stream is live (a key frame cached) before the player joins, untimed
    sub = hub.subscribe()
    while sub.get_nowait() is not None:  # the GOP it starts with, as its feeding task would send it
        pass
    messages = server.messages
    if accel.RtmpOut is not None:  # a player that keeps up: the C output, whose writes go nowhere
        writer = RtmpClientConnection("live", "rtmp://127.0.0.1/live")._writer
        out: Any = accel.RtmpOut(deque(maxlen=0).append, [], writer, 1, accel.Timeline(), messages)
        sub.deliver_to(out)
    else:
        out = None
        sub.deliver_to(lambda f: messages(f) is not None)
    frames0 = peer.snapshot().frames_in
    t0 = time.process_time()
    feed(reads[head:])
    cpu = time.process_time() - t0
    frames = peer.snapshot().frames_in - frames0
    assert not peer.closing and peer.stats.bad_tags == 0, peer.stats
    assert out is None or out.frames_out >= frames - 1, "the player did not keep up"  # (the direct output got them)
    sub.deliver_to(None)
    peer.close("done")
    return cpu, frames


def core_round(chunk_size: int, reads: list[bytes]) -> tuple[float, int]:
    """Only the ingest core on ``reads``: chunk reader and FLV tag parsing (accel's), no connection or hub."""
    reader = accel.ChunkReader()
    reader.chunk_size = chunk_size  # what the publisher announced before the recorded bytes
    parse_video, parse_audio = accel.parse_video_tag, accel.parse_audio_tag
    frames = 0
    t0 = time.process_time()
    for data in reads:
        for m in reader.feed(data):
            if m.type_id == 9:
                frames += parse_video(m.payload, m.timestamp)[0] is not None
            elif m.type_id == 8:
                frames += parse_audio(m.payload, m.timestamp)[0] is not None
    return time.process_time() - t0, frames


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=6, help="rounds run first and not counted")
    ap.add_argument("--loops", type=int, default=10, help="times the 12 s clip is replayed per round")
    ap.add_argument("--chunk-size", type=int, action="append", help="only this case (65536, 4096 or 128)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--python", action="store_true", help="the pure-Python path (sets IOTVIDEO_NATIVE=0)")
    ap.add_argument("--python-ingest", action="store_true", help="chunk reader and FLV parsing in Python only")
    args = ap.parse_args()
    if args.python_ingest:  # accel's names, and the server's copies of them
        accel.ChunkReader = ChunkReader
        accel.parse_video_tag, accel.parse_audio_tag = flvtags.parse_video_tag, flvtags.parse_audio_tag
        rtmp_server._parse_video, rtmp_server._parse_audio = flvtags.parse_video_tag, flvtags.parse_audio_tag
    impl = accel.describe() + (" (ingest in Python: --python-ingest)" if args.python_ingest else "")
    if args.python:  # (bench/media.py drops IOTVIDEO_* from the environment, which describe() reads)
        impl = "pure Python (--python: IOTVIDEO_NATIVE=0)"
    print(f"implementation: {impl}", flush=True)
    cache = Path(tempfile.gettempdir()) / "iotvideo-bench-media"
    cache.mkdir(exist_ok=True)
    encode_clip(cache / "720p-2m.flv", "1280x720", 2000)
    clip = load_clip(cache / "720p-2m.flv")
    cases = [("chunk 65536, a read per frame", 65536, 0), ("chunk 4096, 16 KB reads", 4096, 16384),
             ("chunk 128, 16 KB reads", 128, 16384)]  # fmt: skip
    results: dict[str, Any] = {}
    for label, chunk_size, read_size in cases:
        if args.chunk_size and chunk_size not in args.chunk_size:
            continue
        writes = asyncio.run(record(clip, chunk_size, args.loops))
        reads = reads_of(writes, read_size)
        mb = sum(len(r) for r in reads) / 1e6
        for _ in range(args.warmup):  # the first rounds of a process run slower (allocator warm-up)
            asyncio.run(one_round(chunk_size, reads))
        times = []
        for _ in range(args.rounds):
            cpu, frames = asyncio.run(one_round(chunk_size, reads))
            times.append(cpu)
        best = min(times)
        core = min(core_round(chunk_size, reads)[0] for _ in range(args.rounds))
        results[label] = {"us_per_frame": round(best / frames * 1e6, 2), "ms_per_mb": round(best / mb * 1e3, 3),
                          "core_us_per_frame": round(core / frames * 1e6, 2),
                          "frames": frames, "mb": round(mb, 1)}  # fmt: skip
        print(f"{label:32s} {best / frames * 1e6:8.2f} µs/frame  {best / mb * 1e3:7.3f} ms CPU/MB  "
              f"(reader+parse alone {core / frames * 1e6:5.2f} µs/frame; "
              f"{frames} frames, {mb:.1f} MB, best of {args.rounds})", flush=True)  # fmt: skip
    commit = os.popen(f"git -C {ROOT} rev-parse --short HEAD 2>/dev/null").read().strip() or "?"
    mach = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"machine: {mach}; commit {commit}")
    if args.json:
        print(json.dumps({"implementation": impl, **results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
