"""Interop tests of the media servers: FFmpeg (the Debian binary, else PyAV's) publishes to our RTMP
server; FFmpeg (PyAV) plays our RTMP, HTTP-FLV and LL-HLS outputs. The servers run in-process on a
loop of their own (a ``MediaEndpoint`` with a ``StaticAuthorizer`` over signed tokens); one test
checks the wiring of a real ``iotvideo serve``. Clips are a few seconds long.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from iotvideo.config import Settings
from iotvideo.media import flvtags
from iotvideo.media.auth import StaticAuthorizer
from iotvideo.media.frames import Codec, MediaFrame
from iotvideo.media.hls import HlsConfig
from iotvideo.media.node import MediaEndpoint
from iotvideo.media.rtmp import (
    Connected,
    MediaData,
    RtmpClientConnection,
    StreamStatus,
)
from iotvideo.media.tokens import TokenSigner

from conftest import free_port, start_server, stop_server
from rtmp_support import RtmpPeer
from test_fmp4_hls import encode_video

av = pytest.importorskip("av")

T = TypeVar("T")
KEY = b"media-test-key-0123456789abcdef"
FFMPEG = shutil.which("ffmpeg")


# --- an in-process media node on a loop of its own -------------------------------------------------


class MediaNode:
    """A ``MediaEndpoint`` with its HTTP routes under uvicorn, on a background thread's loop."""

    def __init__(self, tmp: Path) -> None:
        import uvicorn
        from starlette.applications import Starlette

        self.signer = TokenSigner(KEY)
        settings = Settings(data_dir=tmp, host="127.0.0.1", rtmp_port=0, media_idle_s=5)
        self.endpoint = MediaEndpoint(settings, StaticAuthorizer(signer=self.signer),
                                      hls=HlsConfig(segment_target=1.0))
        self.http_port = free_port()
        from iotvideo.http_protocol import protocol_class

        config = uvicorn.Config(Starlette(routes=self.endpoint.routes), host="127.0.0.1", port=self.http_port,
                                log_config=None, lifespan="off", access_log=False,
                                http=protocol_class(lambda path: None))  # as ``iotvideo serve``: HTTP-FLV direct writes
        self.http = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop
        try:  # what ``iotvideo serve`` runs on (uvicorn's loop="auto")
            import uvloop

            self.loop = uvloop.new_event_loop()
        except ImportError:
            self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.run(self.endpoint.start())
        self.serving = asyncio.run_coroutine_threadsafe(self.http.serve(), self.loop)
        deadline = time.time() + 10
        while not self.http.started:
            assert time.time() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        self.rtmp_port = self.endpoint.ports["rtmp"]

    def run(self, coro: Awaitable[T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def call(self, fn: Callable[[], T]) -> T:
        async def go() -> T:
            return fn()

        return self.run(go())

    def push_url(self, name: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live/{name}?token={self.signer.issue('push', name, 60)}"

    def play_urls(self, name: str) -> dict[str, str]:
        """A fresh single-use play URL per output."""
        tok = lambda: self.signer.issue("play", name, 60)  # noqa: E731
        base = f"http://127.0.0.1:{self.http_port}"
        return {
            "rtmp": f"rtmp://127.0.0.1:{self.rtmp_port}/live/{name}?token={tok()}",
            "flv": f"{base}/live/{name}.flv?token={tok()}",
            "hls": f"{base}/hls/{name}/index.m3u8?token={tok()}",
        }

    def wait_live(self, name: str, timeout: float = 20) -> None:
        """Until the stream has a publisher and a cached key frame."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            hub = self.call(lambda: self.endpoint.registry.get(name))
            if hub is not None and self.call(lambda: hub.publishing and hub.stats().gop_frames > 0):
                return
            time.sleep(0.05)
        raise AssertionError(f"{name} did not go live")

    def close(self) -> None:
        self.http.should_exit = True
        try:
            self.serving.result(10)
        finally:
            self.run(self.endpoint.stop())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaNode]:
    n = MediaNode(tmp_path_factory.mktemp("media"))
    yield n
    n.close()


# --- publishers --------------------------------------------------------------------------------------


def ffmpeg_can_mux_hevc_flv() -> bool:
    if FFMPEG is None:
        return False
    probe = subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=1",
         "-frames:v", "1", "-c:v", "libx265", "-x265-params", "log-level=error", "-f", "flv", "-y", os.devnull],
        capture_output=True, timeout=30,
    )  # fmt: skip
    return probe.returncode == 0


def ffmpeg_publish(url: str, video: str, seconds: float, audio: bool) -> subprocess.Popen[bytes]:
    cmd = [FFMPEG or "ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
           "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine"]
    cmd += ["-t", str(seconds), "-c:v", video, "-pix_fmt", "yuv420p", "-g", "25", "-preset", "ultrafast"]
    if video == "libx265":
        cmd += ["-x265-params", "log-level=error"]
    if audio:
        cmd += ["-c:a", "aac"]
    cmd += ["-f", "flv", url]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


PYAV_PUBLISHER = """
import sys, time
import av
url, codec, seconds, fps = sys.argv[1], sys.argv[2], float(sys.argv[3]), 25
out = av.open(url, "w", format="flv", timeout=10)
stream = out.add_stream(codec, rate=fps)
stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
params = "x265-params" if codec == "libx265" else "x264-params"
stream.codec_context.options = {"preset": "ultrafast", params: "keyint=25:min-keyint=25:scenecut=0:log-level=error"}
start = time.monotonic()
for i in range(int(seconds * fps)):
    frame = av.VideoFrame(320, 240, "yuv420p")
    for n, plane in enumerate(frame.planes):
        row = bytes(((x + 4 * i) * (n + 1)) & 0xFF for x in range(plane.line_size))
        plane.update(row * (plane.buffer_size // plane.line_size))
    frame.pts = i
    for packet in stream.encode(frame):
        out.mux(packet)
    time.sleep(max(0.0, start + (i + 1) / fps - time.monotonic()))
for packet in stream.encode(None):
    out.mux(packet)
out.close()
"""


def pyav_publish(url: str, codec: str, seconds: float) -> None:
    """FFmpeg's own FLV muxer and RTMP client (PyAV's recent FFmpeg), in real time, in a process of
    its own (PyAV holds the GIL while it writes, which would stall the server's loop here)."""
    proc = subprocess.run([sys.executable, "-c", PYAV_PUBLISHER, url, codec, str(seconds)],
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")


async def push_frames(peer: RtmpPeer, sid: int, frames: list[MediaFrame], *, hevc_legacy: bool = False,
                      realtime: bool = True) -> None:
    """Send frames with FLV tag bodies from ``flvtags``, paced on their timestamps."""
    start = time.monotonic()
    t0 = next((f.dts for f in frames if not f.is_config), 0)
    for f in frames:
        if realtime and not f.is_config:
            await asyncio.sleep(max(0.0, start + (f.dts - t0) / 1000 - time.monotonic()))
        if f.is_video:
            peer.conn.send_video(sid, f.dts, flvtags.video_payload(f, hevc_legacy=hevc_legacy))
        else:
            peer.conn.send_audio(sid, f.dts, flvtags.audio_payload(f))
        await peer.flush()


# --- players -------------------------------------------------------------------------------------------


@dataclass
class Played:
    kind: str
    first_frame_s: float | None = None
    video_pts: list[float] = field(default_factory=list)
    audio_pts: list[float] = field(default_factory=list)
    size: tuple[int, int] | None = None
    codec: str = ""
    codec_tag: str = ""
    error: str = ""

    def check(self, min_video: int, audio: bool = False) -> None:
        assert not self.error, f"{self.kind}: {self.error}"
        assert len(self.video_pts) >= min_video, f"{self.kind}: {len(self.video_pts)} video frames"
        assert self.size == (320, 240), self.kind
        pts = self.video_pts
        assert all(b > a for a, b in zip(pts, pts[1:])), f"{self.kind}: video timestamps not increasing"
        if audio:
            assert len(self.audio_pts) >= 10, f"{self.kind}: {len(self.audio_pts)} audio frames"
            apts = self.audio_pts
            assert all(b >= a for a, b in zip(apts, apts[1:])), f"{self.kind}: audio timestamps go back"


def pyav_play(kind: str, url: str, max_s: float = 20) -> Played:
    """Decode everything FFmpeg (PyAV) gets from ``url`` until the stream ends."""
    played = Played(kind)
    t0 = time.perf_counter()
    try:
        with av.open(url, timeout=10, options={"analyzeduration": "500000"}) as container:
            streams = [s for s in container.streams if s.type in ("video", "audio")]
            for packet in container.demux(*streams):
                for frame in packet.decode():
                    if frame.pts is None:
                        continue
                    if packet.stream.type == "video":
                        if played.first_frame_s is None:
                            played.first_frame_s = time.perf_counter() - t0
                            played.size = (frame.width, frame.height)
                            played.codec = packet.stream.codec_context.name
                            played.codec_tag = str(packet.stream.codec_context.codec_tag)
                        played.video_pts.append(float(frame.time))
                    else:
                        played.audio_pts.append(float(frame.time))
                if time.perf_counter() - t0 > max_s:
                    break
    except Exception as e:  # reported by check()
        played.error = repr(e)
    return played


def play_all_while(node: MediaNode, name: str, publish: Callable[[], None], kinds: tuple[str, ...] = ("rtmp", "flv", "hls")) -> dict[str, Played]:
    """Publish in the background; once live, play every output at once until the stream ends."""
    with concurrent.futures.ThreadPoolExecutor(len(kinds) + 1) as pool:
        publishing = pool.submit(publish)
        node.wait_live(name)
        urls = node.play_urls(name)
        players = {k: pool.submit(pyav_play, k, urls[k]) for k in kinds}
        publishing.result(60)
        results = {k: f.result(60) for k, f in players.items()}
    for k, p in results.items():
        first = f"{p.first_frame_s * 1000:.0f} ms" if p.first_frame_s is not None else "-"
        print(f"{name} {k}: {len(p.video_pts)} video / {len(p.audio_pts)} audio frames, {p.codec}, first frame {first} (PyAV)")
    return results


# --- tests ---------------------------------------------------------------------------------------------


def test_ffmpeg_publishes_h264_aac_and_every_output_plays(node: MediaNode) -> None:
    name = "h264aac"
    url = node.push_url(name)

    def publish() -> None:
        if FFMPEG is None:
            pyav_publish(url, "libx264", 4)
            return
        proc = ffmpeg_publish(url, "libx264", 4, audio=True)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode(errors="replace")

    played = play_all_while(node, name, publish)
    for kind, p in played.items():
        p.check(min_video=20, audio=FFMPEG is not None)
        assert p.codec == "h264"


def test_h265_enhanced_rtmp(node: MediaNode) -> None:
    name = "hevc-enhanced"
    url = node.push_url(name)
    if ffmpeg_can_mux_hevc_flv():
        def publish() -> None:
            proc = ffmpeg_publish(url, "libx265", 4, audio=False)
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err.decode(errors="replace")
    else:  # Debian 12's FFmpeg 5.1 predates Enhanced RTMP: PyAV's FFmpeg publishes instead
        if "libx265" not in av.codecs_available:
            pytest.skip("no FFmpeg here writes HEVC to FLV")

        def publish() -> None:
            pyav_publish(url, "libx265", 4)

    played = play_all_while(node, name, publish)
    for kind, p in played.items():
        p.check(min_video=20)
        assert p.codec == "hevc"
    assert played["hls"].codec_tag == "hvc1"


def test_players_joining_at_different_times_share_each_frame_and_each_decode_from_zero(node: MediaNode) -> None:
    """Each frame's RTMP message and FLV tag tail is built once for every player; players that
    join later have their own timeline (their first frame at 0) and decode everything."""
    name = "sharedfanout"
    url = node.push_url(name)
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        publishing = pool.submit(pyav_publish, url, "libx264", 5)
        node.wait_live(name)
        first = {k: pool.submit(pyav_play, k, u) for k, u in node.play_urls(name).items() if k != "hls"}
        time.sleep(1.7)  # the later players start on a later GOP
        later = {k: pool.submit(pyav_play, k, u) for k, u in node.play_urls(name).items() if k != "hls"}
        built = node.call(lambda: (len(node.endpoint.rtmp.messages), node.endpoint.rtmp.messages))
        publishing.result(60)
        played = {**{f"{k}-first": f.result(60) for k, f in first.items()},
                  **{f"{k}-later": f.result(60) for k, f in later.items()}}
    for kind, p in played.items():
        p.check(min_video=40 if kind.endswith("first") else 20)
        assert p.video_pts[0] < 0.1, f"{kind} starts at {p.video_pts[0]} s, not at 0"
    assert len(played["rtmp-first"].video_pts) > len(played["rtmp-later"].video_pts) + 20
    assert built[0] > 0  # frames were built into shared RTMP messages


def test_cache_duration_starts_players_that_far_behind_the_live_edge(node: MediaNode) -> None:
    """A play token carrying CacheDuration (``extra["c"]``, ms) starts an RTMP or HTTP-FLV player on
    the latest key frame at least that far behind the live edge, as far as the hub's cache reaches
    (the first such player makes the hub keep that much). FFmpeg (PyAV) plays until the stream
    ends: its first frame is at 0 and the number of frames it decodes shows where it started."""
    frames = encode_video(av, Codec.H264, frames=200)  # 8 s, a key frame every second
    config, media = frames[0], frames[1:]
    name = "cached"

    def url(kind: str, cache_ms: int) -> str:
        token = node.signer.issue("play", name, 60, extra={"c": cache_ms} if cache_ms else None)
        if kind == "flv":
            return f"http://127.0.0.1:{node.http_port}/live/{name}.flv?token={token}"
        return f"rtmp://127.0.0.1:{node.rtmp_port}/live/{name}?token={token}"

    async def main() -> dict[str, Played]:
        loop = asyncio.get_running_loop()
        hub = node.endpoint.registry.get_or_create(name)
        publisher = await RtmpPeer.open(node.rtmp_port)
        sid, _ = await publisher.stream("publish", f"{name}?token={node.signer.issue('push', name, 60)}")
        players: dict[str, asyncio.Future[Played]] = {}

        async def join(key: str, kind: str, cache_ms: int) -> None:
            n = hub.subscribers
            players[key] = loop.run_in_executor(None, pyav_play, kind, url(kind, cache_ms))
            async with asyncio.timeout(10):
                while hub.subscribers <= n:
                    await asyncio.sleep(0.01)

        await push_frames(publisher, sid, [config, *media[:50]], realtime=False)  # 2 s, only the last GOP cached
        await join("first-rtmp-3000", "rtmp", 3000)  # starts at 1 s; from now on the hub keeps 3 s
        await push_frames(publisher, sid, media[50:150], realtime=False)  # up to 6 s
        for kind, cache_ms in (("rtmp", 3000), ("flv", 3000), ("rtmp", 0), ("flv", 1500)):
            await join(f"{kind}-{cache_ms}", kind, cache_ms)
        await push_frames(publisher, sid, media[150:], realtime=False)
        publisher.conn.delete_stream(sid)
        await publisher.flush()
        done = {k: await asyncio.wait_for(f, 60) for k, f in players.items()}
        publisher.close()
        return done

    played = node.run(main(), timeout=120)
    keys = [f.dts for f in media if f.keyframe]
    edge = media[149].dts  # when the later players came
    start = {"first-rtmp-3000": max(k for k in keys if k <= media[49].dts)}  # the current GOP: all there was
    for key, cache_ms in (("rtmp-3000", 3000), ("flv-3000", 3000), ("rtmp-0", 0), ("flv-1500", 1500)):
        start[key] = max(k for k in keys if k <= edge - cache_ms)
    assert [keys.index(start[k]) for k in ("first-rtmp-3000", "rtmp-3000", "rtmp-0", "flv-1500")] == [1, 2, 5, 4]
    for key, p in played.items():
        p.check(min_video=20)
        assert p.video_pts[0] < 0.1, f"{key}: first frame at {p.video_pts[0]} s"
        expect = sum(1 for f in media if f.dts >= start[key])
        assert abs(len(p.video_pts) - expect) <= 2, f"{key}: {len(p.video_pts)} frames, {expect} from {start[key]} ms"


def test_h265_legacy_codec_id_12(node: MediaNode) -> None:
    try:
        frames = encode_video(av, Codec.H265, frames=100)  # 4 s at 25 fps, a key frame every second
    except Exception as e:
        pytest.skip(f"cannot encode H.265 with PyAV: {e}")
    name = "hevc-legacy"

    async def publish() -> None:
        peer = await RtmpPeer.open(node.rtmp_port)
        sid, status = await peer.stream("publish", f"{name}?token={node.signer.issue('push', name, 60)}")
        assert status.code == "NetStream.Publish.Start"
        assert flvtags.video_payload(frames[0], hevc_legacy=True)[0] & 0x0F == 12
        await push_frames(peer, sid, frames, hevc_legacy=True)
        peer.conn.delete_stream(sid)
        await peer.flush()
        peer.close()

    played = play_all_while(node, name, lambda: asyncio.run(publish()))
    for kind, p in played.items():
        p.check(min_video=20)
        assert p.codec == "hevc"


def test_publish_and_play_without_a_valid_token_are_refused(node: MediaNode) -> None:
    async def main() -> None:
        for name in ("cam1", "cam1?token=bogus", f"cam1?token={node.signer.issue('play', 'cam1', 60)}",
                     f"cam1?token={node.signer.issue('push', 'other', 60)}"):
            peer = await RtmpPeer.open(node.rtmp_port)
            _, status = await peer.stream("publish", name)
            assert status.level == "error" and status.code.startswith("NetStream.Publish."), status
            assert await peer.closed_by_server()
        cam1 = node.endpoint.registry.get("cam1")
        assert cam1 is None or not cam1.publishing
        # a single-use push token works once
        token = node.signer.issue("push", "cam2", 60)
        first = await RtmpPeer.open(node.rtmp_port)
        _, status = await first.stream("publish", f"cam2?token={token}")
        assert status.code == "NetStream.Publish.Start"
        second = await RtmpPeer.open(node.rtmp_port)
        _, status = await second.stream("publish", f"cam2?token={token}")
        assert status.level == "error"
        first.close()
        # players too
        peer = await RtmpPeer.open(node.rtmp_port)
        _, status = await peer.stream("play", "cam2?token=bogus")
        assert status.level == "error"

    node.run(main())
    base = f"http://127.0.0.1:{node.http_port}"
    with httpx.Client(timeout=10) as http:
        assert http.get(f"{base}/live/cam2.flv").status_code == 403
        assert http.get(f"{base}/live/cam2.flv?token=bogus").status_code == 403
        assert http.get(f"{base}/hls/cam2/index.m3u8").status_code == 403
        assert http.get(f"{base}/hls/cam2/index.m3u8?s=made-up").status_code == 403
        assert http.get(f"{base}/hls/cam2/seg0.m4s?s=made-up").status_code == 403
        token = node.signer.issue("play", "cam2", 60)
        r = http.get(f"{base}/hls/cam2/index.m3u8?token={token}", timeout=20)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/vnd.apple.mpegurl")
        assert r.headers["access-control-allow-origin"] == "*"
        assert http.get(f"{base}/hls/cam2/index.m3u8?token={token}").status_code == 403  # spent


def test_garbage_publishers_never_disturb_a_stream_being_played(node: MediaNode) -> None:
    """While a player watches a good stream, peers send random bytes, broken tags and an
    unsupported codec: each is closed on its own, and the player's frames keep coming."""
    video = encode_video(av, Codec.H264, frames=100)
    arrivals: list[float] = []
    timestamps: list[int] = []

    async def good_publisher() -> None:
        peer = await RtmpPeer.open(node.rtmp_port)
        sid, _ = await peer.stream("publish", f"good?token={node.signer.issue('push', 'good', 60)}")
        await push_frames(peer, sid, video)
        peer.conn.delete_stream(sid)
        await peer.flush()
        peer.close()

    async def player(ready: asyncio.Event) -> None:
        peer = await RtmpPeer.open(node.rtmp_port)
        await peer.stream("play", f"good?token={node.signer.issue('play', 'good', 60)}")
        while True:
            ev = await asyncio.wait_for(peer.next_event(), 10)
            if isinstance(ev, MediaData) and ev.kind == "video":
                frame = flvtags.parse_video(ev.payload, ev.timestamp)
                if frame is not None and not frame.is_config:
                    arrivals.append(time.monotonic())
                    timestamps.append(ev.timestamp)
                    if len(arrivals) == 10:
                        ready.set()
            elif isinstance(ev, StreamStatus) and ev.code == "NetStream.Play.UnpublishNotify":
                peer.close()
                return

    async def raw(data: bytes) -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", node.rtmp_port)
        writer.write(data)
        await writer.drain()
        try:
            async with asyncio.timeout(5):
                while await reader.read(65536):
                    pass
            return True
        except ConnectionError:
            return True
        except TimeoutError:
            return False
        finally:
            writer.close()

    async def broken_tags() -> tuple[int, bool]:
        peer = await RtmpPeer.open(node.rtmp_port)
        sid, status = await peer.stream("publish", f"bad?token={node.signer.issue('push', 'bad', 60)}")
        assert status.code == "NetStream.Publish.Start"
        rnd = random.Random(4)
        video_bodies = [b"", b"\x17", b"\x17\x00\x00", b"\x17\x00\x00\x00\x00\x01",  # truncated
                        b"\x17\x03\x00\x00\x00",  # AVCPacketType 3
                        b"\x17\x01\x00\x00\x00\x00\x00\x00\x09abc",  # a NAL unit longer than the tag
                        b"\x90hvc1\x01\x02",  # Enhanced RTMP HEVC sequence start, truncated record
                        b"\x27\x01\x00\x00\x00\x00\x00\x01\x00" + bytes(8)]  # lengths that do not add up
        audio_bodies = [b"", b"\xaf", b"\xaf\x00\x12", b"\xaf\x05\x00"]
        for i in range(200):
            if i % 3:
                peer.conn.send_video(sid, i * 40, rnd.choice(video_bodies))
            else:
                peer.conn.send_audio(sid, i * 40, rnd.choice(audio_bodies))
        await peer.flush()
        await asyncio.sleep(0.3)
        bad = [s for s in node.endpoint.rtmp.stats() if s.stream == "bad"]
        counted = bad[0].bad_tags if bad else -1
        peer.conn.send_video(sid, 10_000, b"\x22\x01\x00\x00\x00")  # Sorenson H.263: unsupported
        await peer.flush()
        return counted, await peer.closed_by_server()

    async def main() -> None:
        ready = asyncio.Event()
        publishing = asyncio.create_task(good_publisher())
        await asyncio.sleep(0.3)
        playing = asyncio.create_task(player(ready))
        await asyncio.wait_for(ready.wait(), 10)
        handshake = b"\x03" + bytes(1536)
        results = await asyncio.gather(
            raw(b"\x07" + os.urandom(4096)),  # not even a handshake
            raw(handshake + bytes(1536) + os.urandom(65536)),  # handshake, then noise
            raw(handshake + bytes(1536) + b"\x02" + b"\xff" * 15),  # a control message of 16 MiB
            broken_tags(),
        )
        await asyncio.wait_for(publishing, 20)
        await asyncio.wait_for(playing, 20)
        assert results[0] and results[1] and results[2], "a garbage connection was left open"
        counted, closed = results[3]
        assert counted >= 50 and closed, (counted, closed)

    node.run(main())
    assert len(arrivals) >= 90, len(arrivals)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert max(gaps) < 1.0, f"the player stalled for {max(gaps):.2f} s"
    assert all(b > a for a, b in zip(timestamps, timestamps[1:]))
    assert not [s for s in node.endpoint.rtmp.stats() if s.stream in ("good", "bad")]


def test_a_publisher_read_by_the_c_lane_is_acknowledged_and_let_go_cleanly(node: MediaNode) -> None:
    """With the C accelerator the publisher's connection is read by its lane on a descriptor of its
    own: the publisher's window is acknowledged as it goes, a player gets the frames, and when the
    publisher drops the connection the server closes it and that descriptor."""
    from iotvideo.media import accel
    from iotvideo.media.rtmp.messages import WindowAckSize

    video = encode_video(av, Codec.H264, frames=60)

    def server_peer(name: str) -> Any:
        return next((p for p in node.endpoint.rtmp._peers if p.stats.stream == name and p.stats.role == "publisher"),
                    None)

    async def main() -> None:
        pub = await RtmpPeer.open(node.rtmp_port)
        sid, status = await pub.stream("publish", f"lanecam?token={node.signer.issue('push', 'lanecam', 60)}")
        assert status.code == "NetStream.Publish.Start"
        pub.conn._send_control(WindowAckSize(20_000))  # acknowledge every 20 kB
        await push_frames(pub, sid, video[:20], realtime=False)
        await asyncio.sleep(0.2)
        peer = server_peer("lanecam")
        assert peer is not None
        fd, ino = peer._lane_fd, None
        if accel.PublishLane is not None:
            assert peer._armed and fd >= 0
            ino = os.fstat(fd).st_ino
        player = await RtmpPeer.open(node.rtmp_port)
        await player.stream("play", f"lanecam?token={node.signer.issue('play', 'lanecam', 60)}")
        await push_frames(pub, sid, video[20:], realtime=False)
        await player.video_frames(30)
        await pub.acknowledged(100_000)  # the server's acknowledgements reach the publisher
        assert peer.snapshot().bytes_in >= pub.conn.peer_acknowledged
        pub.writer.transport.abort()  # the publisher drops the connection
        async with asyncio.timeout(5):
            while server_peer("lanecam") is not None:
                await asyncio.sleep(0.02)
        assert peer.closing and not peer._armed and peer._lane_fd == -1
        if ino is not None:  # that descriptor is closed (or is another file now)
            try:
                assert os.fstat(fd).st_ino != ino
            except OSError:
                pass
        player.close()

    node.run(main())


def test_a_player_that_does_not_read_never_holds_back_the_publisher_or_other_players(node: MediaNode) -> None:
    """A player whose socket is full is paused and skips ahead on the hub; the others get every frame."""
    config = encode_video(av, Codec.H264, frames=1)[0]  # a real configuration (the bytes after it are not)
    frames = [config] + [
        MediaFrame(Codec.H264, 10 * i, 10 * i, struct.pack(">I", 100_000) + (b"\x65" if i % 10 == 0 else b"\x41")
                   + bytes(99_999), keyframe=i % 10 == 0)
        for i in range(150)
    ]  # 15 MB in 1.5 s: more than a subscription's queue, the socket's write buffer and the kernel's
    name = "flood"

    async def main() -> None:
        publisher = await RtmpPeer.open(node.rtmp_port)
        sid, _ = await publisher.stream("publish", f"{name}?token={node.signer.issue('push', name, 60)}")
        await push_frames(publisher, sid, frames[:11], realtime=False)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", node.rtmp_port))
        reader, writer = await asyncio.open_connection(sock=sock)
        slow = RtmpPeer(reader, writer, RtmpClientConnection("live", "rtmp://127.0.0.1/live"))
        await slow.until(Connected)
        await slow.stream("play", f"{name}?token={node.signer.issue('play', name, 60)}")
        fast = await RtmpPeer.open(node.rtmp_port)
        await fast.stream("play", f"{name}?token={node.signer.issue('play', name, 60)}")
        received = 0

        async def read_all() -> None:
            nonlocal received
            while True:
                ev = await fast.next_event()
                if isinstance(ev, MediaData) and ev.kind == "video":
                    received += 1
                elif isinstance(ev, StreamStatus) and ev.code == "NetStream.Play.UnpublishNotify":
                    return

        reading = asyncio.create_task(read_all())
        t0 = time.perf_counter()
        await push_frames(publisher, sid, frames[11:])
        pushed_in = time.perf_counter() - t0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                while received < 140:
                    await asyncio.sleep(0.01)
        stats = {s.role + ("-slow" if s.peer.endswith(str(sock.getsockname()[1])) else ""): s
                 for s in node.endpoint.rtmp.stats()}
        assert received >= 140 and stats["player"].dropped_out == 0, (received, stats)
        assert pushed_in < 3.0
        publisher.conn.delete_stream(sid)
        await publisher.flush()
        await asyncio.wait_for(reading, 20)
        print(f"15 MB pushed in {pushed_in:.2f} s; slow player skipped {stats['player-slow'].dropped_out} frames")
        assert stats["player-slow"].dropped_out > 0
        for peer in (publisher, slow, fast):
            peer.close()

    node.run(main())


def _flv_tags(body: bytes) -> list[tuple[int, int, bytes]]:
    """(type, timestamp, body) of each tag of an FLV byte stream (header first), checking PreviousTagSize."""
    assert body[:3] == b"FLV"
    pos, tags = 13, []
    while pos + 11 <= len(body):
        kind, size = body[pos], int.from_bytes(body[pos + 1:pos + 4], "big")
        ts = int.from_bytes(body[pos + 4:pos + 7], "big") | body[pos + 7] << 24
        if pos + 11 + size + 4 > len(body):
            break
        tags.append((kind, ts, body[pos + 11:pos + 11 + size]))
        assert int.from_bytes(body[pos + 11 + size:pos + 15 + size], "big") == 11 + size
        pos += 15 + size
    return tags


def test_http_flv_players_get_every_frame_in_order_directly_or_after_a_stall(node: MediaNode) -> None:
    """HTTP-FLV players are written each frame from the publisher's call (one HTTP chunk per frame)
    while they keep up; one that stops reading gets frames through its queue, and both see the
    frames in publishing order with non-decreasing times (no frame passes another)."""
    config = encode_video(av, Codec.H264, frames=1)[0]
    frames = [config] + [
        MediaFrame(Codec.H264, 40 * i, 40 * i, struct.pack(">I", 60_000) + (b"\x65" if i % 25 == 0 else b"\x41")
                   + struct.pack(">I", i) + bytes(59_995), keyframe=i % 25 == 0)
        for i in range(200)
    ]
    name = "flvdirect"

    async def main() -> None:
        publisher = await RtmpPeer.open(node.rtmp_port)
        sid, _ = await publisher.stream("publish", f"{name}?token={node.signer.issue('push', name, 60)}")
        await push_frames(publisher, sid, frames[:26], realtime=False)
        bodies = {"steady": bytearray(), "stalled": bytearray()}
        stall = asyncio.Event()

        async def play(kind: str) -> None:
            sock = socket.socket()
            if kind == "stalled":  # a small receive window: the server's socket fills when it stops reading
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", node.http_port))
            reader, writer = await asyncio.open_connection(sock=sock)
            token = node.signer.issue("play", name, 60)
            writer.write(f"GET /live/{name}.flv?token={token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower(), head
            while True:  # the chunked body
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                if size == 0:
                    break
                bodies[kind] += (await reader.readexactly(size + 2))[:-2]
                if kind == "stalled" and len(bodies[kind]) > 1_000_000 and not stall.is_set():
                    stall.set()  # stops reading for 4.5 s while 7 MB of frames keep coming: more than the
                    await asyncio.sleep(4.5)  # socket holds (4 MB), so they go through its queue (or are skipped)
            writer.close()

        players = [asyncio.create_task(play(k)) for k in bodies]
        await asyncio.sleep(0.5)
        await push_frames(publisher, sid, frames[26:])
        await asyncio.sleep(2.5)
        publisher.conn.delete_stream(sid)
        await publisher.flush()
        await asyncio.wait_for(asyncio.gather(*players), 20)
        publisher.close()
        for kind, body in bodies.items():
            video = [(ts, data) for t, ts, data in _flv_tags(bytes(body)) if t == 9 and data[1] == 1]
            numbers = [struct.unpack(">I", data[10:14])[0] for _, data in video]
            assert numbers == sorted(set(numbers)), (kind, numbers)  # in order, none twice
            times = [ts for ts, _ in video]
            assert times == sorted(times), kind
            assert numbers[-1] == 199, (kind, numbers[-5:])  # got to the end
            if kind == "steady":
                assert numbers == list(range(numbers[0], 200)), kind  # every frame

    node.run(main())


async def _closed_within(port: int, data: bytes, seconds: float) -> float:
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
    except ConnectionError:
        pass
    writer.close()
    return time.perf_counter() - t0


def test_handshake_and_idle_timeouts(node: MediaNode) -> None:
    from iotvideo.media.rtmp_server import RtmpLimits, RtmpServer

    async def main() -> None:
        server = RtmpServer(node.endpoint.registry, node.endpoint.authorizer,
                            RtmpLimits(handshake_timeout_s=0.5, idle_timeout_s=1.0))
        port = await server.start("127.0.0.1", 0)
        try:
            stuck = await _closed_within(port, b"\x03" + bytes(100), 3)  # half a handshake
            assert 0.5 <= stuck < 3
            peer = await RtmpPeer.open(port)  # connected, then silent: pinged, and closed when it does not answer
            t0 = time.perf_counter()
            assert await peer.closed_by_server(4)
            assert time.perf_counter() - t0 >= 0.5
        finally:
            await server.close()

    node.run(main())


def test_time_to_first_frame_for_a_live_stream(node: MediaNode) -> None:
    """Measured and printed (no assertion on the figures): RTMP, HTTP-FLV and LL-HLS."""
    video = encode_video(av, Codec.H264, frames=150)  # 6 s
    name = "ttff"
    figures: dict[str, float] = {}

    async def publisher() -> None:
        peer = await RtmpPeer.open(node.rtmp_port)
        sid, _ = await peer.stream("publish", f"{name}?token={node.signer.issue('push', name, 60)}")
        await push_frames(peer, sid, video)
        peer.close()

    async def rtmp_first_frame() -> float:
        t0 = time.perf_counter()
        peer = await RtmpPeer.open(node.rtmp_port)
        await peer.stream("play", f"{name}?token={node.signer.issue('play', name, 60)}")
        while True:
            ev = await peer.next_event()
            if isinstance(ev, MediaData) and ev.kind == "video" and ev.payload[1:2] == b"\x01":
                peer.close()
                return time.perf_counter() - t0

    async def flv_first_frame(http: httpx.AsyncClient) -> float:
        t0 = time.perf_counter()
        url = f"http://127.0.0.1:{node.http_port}/live/{name}.flv?token={node.signer.issue('play', name, 60)}"
        buf = b""
        async with http.stream("GET", url) as r:
            assert r.headers["access-control-allow-origin"] == "*"
            async for chunk in r.aiter_raw():
                buf += chunk
                pos = 13  # header and PreviousTagSize0
                while pos + 11 <= len(buf):
                    size = int.from_bytes(buf[pos + 1 : pos + 4], "big")
                    if buf[pos] == 9 and pos + 13 <= len(buf) and buf[pos + 12] == 1:
                        return time.perf_counter() - t0
                    pos += 11 + size + 4
        raise AssertionError("no video frame")

    async def hls_first_part(http: httpx.AsyncClient) -> float:
        t0 = time.perf_counter()
        base = f"http://127.0.0.1:{node.http_port}/hls/{name}/"
        r = await http.get(f"{base}index.m3u8?token={node.signer.issue('play', name, 60)}")
        media = next(line for line in r.text.splitlines() if line.startswith("index.m3u8?s="))
        playlist = (await http.get(base + media)).text
        init = playlist.split('#EXT-X-MAP:URI="')[1].split('"')[0]
        part = [line for line in playlist.splitlines() if line.startswith("#EXT-X-PART:")][-1]
        part_uri = part.split('URI="')[1].split('"')[0]
        r_init, r_part = await asyncio.gather(http.get(base + init), http.get(base + part_uri))
        assert r_init.headers["content-type"] == "video/mp4"
        assert r_part.headers["content-type"] == "video/iso.segment" and r_part.content[4:8] == b"moof"
        return time.perf_counter() - t0

    async def main() -> None:
        publishing = asyncio.create_task(publisher())
        async with asyncio.timeout(10):  # live for a second and a half: a complete segment, a GOP in the cache
            while (hub := node.endpoint.registry.get(name)) is None or hub.stats().frames_in < 40:
                await asyncio.sleep(0.05)
        async with asyncio.timeout(20), httpx.AsyncClient(timeout=10) as http:
            figures["rtmp"] = await rtmp_first_frame()
            figures["flv"] = await flv_first_frame(http)
            figures["hls (playlist, init, last part)"] = await hls_first_part(http)
        await asyncio.wait_for(publishing, 20)

    node.run(main())
    print("time to first frame, stream already live:", ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in figures.items()))


def test_hls_blocking_reload_and_preload_hint(node: MediaNode) -> None:
    video = encode_video(av, Codec.H264, frames=100)
    name = "llhls"

    async def main() -> None:
        peer = await RtmpPeer.open(node.rtmp_port)
        sid, _ = await peer.stream("publish", f"{name}?token={node.signer.issue('push', name, 60)}")
        pushing = asyncio.create_task(push_frames(peer, sid, video))
        base = f"http://127.0.0.1:{node.http_port}/hls/{name}/"
        async with httpx.AsyncClient(timeout=15) as http:
            r = await http.get(f"{base}index.m3u8?token={node.signer.issue('play', name, 60)}")
            assert "#EXT-X-STREAM-INF:" in r.text and 'CODECS="avc1.' in r.text
            media = next(line for line in r.text.splitlines() if line.startswith("index.m3u8?s="))
            playlist = (await http.get(base + media)).text
            assert r.headers["cache-control"] == "no-cache"
            msn = int(playlist.split("#EXT-X-MEDIA-SEQUENCE:")[1].split()[0])
            hint = playlist.split('#EXT-X-PRELOAD-HINT:TYPE=PART,URI="')[1].split('"')[0]
            # the hinted part is answered once it exists
            t0 = time.perf_counter()
            part = await http.get(base + hint)
            assert part.status_code == 200 and part.content[4:8] == b"moof", part.status_code
            print(f"preload hint part answered after {(time.perf_counter() - t0) * 1000:.0f} ms")
            # a blocking reload for the next segment returns once it is listed
            t0 = time.perf_counter()
            segments = [int(line[3:].split(".")[0]) for line in playlist.splitlines() if line.startswith("seg")]
            last = max(segments, default=msn - 1)  # the last complete segment
            r = await http.get(f"{base}{media}&_HLS_msn={last + 2}&_HLS_part=0")
            assert r.status_code == 200 and f"seg{last + 1}.m4s" in r.text
            print(f"blocking reload for msn {last + 2} part 0 answered after {(time.perf_counter() - t0) * 1000:.0f} ms")
            # too far ahead: 400
            assert (await http.get(f"{base}{media}&_HLS_msn={last + 10}")).status_code == 400
            assert (await http.get(f"{base}{media}&_HLS_part=1")).status_code == 400
        await pushing
        peer.close()

    node.run(main())


def test_real_server_listens_for_rtmp_and_refuses_unknown_publishers(tmp_path: Path) -> None:
    """``iotvideo serve --rtmp-port`` wires the media endpoint; without a live-session layer nothing is allowed."""
    info = start_server("sqlite", tmp_path / "srv")
    try:
        async def main() -> None:
            peer = await RtmpPeer.open(info.rtmp_port)
            _, status = await peer.stream("publish", "cam?token=whatever")
            assert status.level == "error"
            assert await peer.closed_by_server()

        asyncio.run(main())
        r = httpx.get(f"http://127.0.0.1:{info.port}/live/cam.flv?token=x", timeout=10)
        assert r.status_code in (403, 404) and r.headers["access-control-allow-origin"] == "*"
    finally:
        stop_server(info)
