"""Live-media benchmark: iotvideo's media server side by side with nginx-rtmp on the same machine and load.

    .venv/bin/python bench/media.py [--quick] [--rounds N] [--only iotvideo|nginx]

1. installs nginx + ``libnginx-mod-rtmp`` with apt-get when missing (``apt-get update`` on failure);
2. encodes two test clips once with ffmpeg (H.264, 1 s GOP, no B-frames, no audio): 720p at
   ~2 Mbit/s and 360p at ~600 kbit/s, 12 s each, and pre-parses them into FLV video tag bodies;
3. starts nginx (own temp config: ``rtmp`` on a free loopback port, ``daemon off``, one worker,
   pid and error log in a temp dir) and ``iotvideo serve`` (free ports, IOTVIDEO_LOG_LEVEL=warning);
   both stay up for the whole run (an idle server costs nothing); with two CPUs or more, both servers
   (every thread) run on the last CPU and this load generator on the others, so that the scheduler
   moving one next to the other does not move the figures (``--no-pin``: no such placement);
4. runs the same phases against both, with a light load generator in this one process (asyncio,
   our sans-IO ``RtmpClientConnection``): publishers replay the pre-parsed frames in real time,
   players read and discard, counting bytes and frames. The cpu/stream phase runs FIRST and the
   players/core phase second, each in ``--rounds`` rounds (default 3, ``--quick`` 1) that alternate
   the servers (nginx-rtmp round 1, iotvideo round 1, nginx-rtmp round 2, ...), so that a drift of
   the machine hits both alike; then the other phases run once per server, nginx-rtmp's then
   iotvideo's, in the order below:

   * **cpu/stream**: N publishers × 2 Mbit/s (default 200, ``--quick`` 50), one RTMP player each,
     a fresh set each round; server CPU (from /proc/PID/stat, user and system apart, nginx master +
     workers) per stream. The figure is the median of the rounds (each round's figures are kept,
     and the table shows min–max);
   * **players/core**: one 600 kbit/s stream, the publisher alone and then players ramped (50,
     100, 200, 400), each reading over the same window; CPU per player is the slope of the
     least-squares line of server CPU over players through all rounds' readings (steps where a
     player fell behind, < 90 % of the frames sent, are left out: the server is saturated there),
     players per core is 100 / that slope; the same with HTTP-FLV players (iotvideo only: stock
     nginx-rtmp has no HTTP-FLV);
   * **time to first frame, stream already live**: connect → first video key frame (the first
     decodable frame), RTMP (both) and HTTP-FLV (iotvideo; stock nginx-rtmp has no HTTP-FLV), n=20;
   * **glass-to-glass (network path)**: the publisher appends an SEI NAL carrying its send time
     (wall clock, ns) to every frame; the player reads it back on arrival. This is the server's
     relay latency on loopback, *excluding* camera capture, encode, player buffering and decode.
     RTMP and HTTP-FLV (both), and LL-HLS (iotvideo; nginx-rtmp's HLS is not low-latency: n/a):
     a player that works as hls.js in low-latency mode (blocking playlist reload for the next
     part, then the part) and finds the stamps in the fMP4 parts; this includes the wait for a
     part to be complete (up to a part, 1/3 s), not the player's hold-back (PART-HOLD-BACK 1 s).

Idle camera → first frame from the API call (iotvideo only: nginx-rtmp has no API) is measured by
``bench/live_start.py``, run from here (real ``iotvideo serve`` + ``iotvideo camera``, the official
SDK's ``QueryLiveStreaming``, then FFmpeg for RTMP/FLV/HLS and hls.js in Chromium for LL-HLS).
Prints a table, then ONE final JSON line; ``--write-docs`` also updates docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from benchkit import free_port, say, wait_healthy  # noqa: E402
from iotvideo.media.rtmp import (  # noqa: E402
    Connected,
    MediaData,
    RtmpClientConnection,
    StreamCreated,
    StreamStatus,
)

DOCS = ROOT / "docs" / "benchmarks.md"
NATIVE = "1"  # IOTVIDEO_NATIVE for the iotvideo server ("0" with --python)
MARK_BEGIN = "<!-- bench/media.py:begin -->"
MARK_END = "<!-- bench/media.py:end -->"
SEI_UUID = b"iotvideo-g2g-ts\x00"  # 16 bytes
CLIP_S = 12
FPS = 25
# idle camera → first frame, from the QueryLiveStreaming call: bench/live_start.py's rows, by our names
IDLE_CAMERA_ROWS = {"rtmp": "rtmp/ffmpeg", "flv": "flv/ffmpeg", "hls": "hls/ffmpeg", "hls_js": "hls/hls.js"}

for _v in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_v, None)
for _v in [k for k in os.environ if k.startswith("IOTVIDEO_")]:
    os.environ.pop(_v)

_CLK = os.sysconf("SC_CLK_TCK")


# --- setup ---------------------------------------------------------------------------------------


def ensure_nginx_rtmp() -> str:
    mod = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
    if shutil.which("nginx") and mod.exists():
        return shutil.which("nginx") or "nginx"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def apt(*args: str) -> bool:
        for _ in range(30):  # another apt may hold the lock for a while
            r = subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True, timeout=900)
            if r.returncode == 0:
                return True
            if "lock" not in r.stderr:
                return False
            time.sleep(5)
        return False

    say("nginx-rtmp missing: apt-get install -y nginx-light libnginx-mod-rtmp")
    pkgs = ["install", "-y", "--no-install-recommends", "nginx-light", "libnginx-mod-rtmp"]
    if not apt(*pkgs):
        apt("update")
        if not apt(*pkgs):
            apt("install", "-y", "nginx", "libnginx-mod-rtmp")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists() or not mod.exists():
        raise SystemExit("could not install nginx + libnginx-mod-rtmp")
    # the package may have started the system nginx: it is not ours to stop, and uses no port of ours
    return nginx


def encode_clip(path: Path, size: str, kbps: int) -> None:
    if path.exists() and path.stat().st_size > 0:
        return
    say(f"encoding {path.name} ({size}, {kbps} kbit/s, {CLIP_S} s)")
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
           "-i", f"testsrc2=size={size}:rate={FPS}", "-t", str(CLIP_S), "-an",
           "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
           "-b:v", f"{kbps}k", "-maxrate", f"{kbps}k", "-bufsize", f"{kbps // 2}k",
           "-g", str(FPS), "-keyint_min", str(FPS), "-sc_threshold", "0", "-bf", "0", "-f", "flv", str(path)]
    subprocess.run(cmd, check=True, timeout=300)


@dataclass
class Clip:
    config: bytes  # the AVC sequence header tag body
    frames: list[tuple[int, bool, bytes]]  # (dts ms from 0, keyframe, video tag body)
    duration_ms: int
    kbps: float


def load_clip(path: Path) -> Clip:
    raw = path.read_bytes()
    pos = 13
    config = b""
    frames: list[tuple[int, bool, bytes]] = []
    while pos + 11 <= len(raw):
        kind = raw[pos]
        size = int.from_bytes(raw[pos + 1:pos + 4], "big")
        ts = int.from_bytes(raw[pos + 4:pos + 7], "big") | raw[pos + 7] << 24
        body = raw[pos + 11:pos + 11 + size]
        pos += 11 + size + 4
        if kind != 9 or len(body) < 5:
            continue
        if body[1] == 0:
            config = body
        elif body[1] == 1:
            frames.append((ts, body[0] >> 4 == 1, body))
    t0 = frames[0][0]
    frames = [(t - t0, k, b) for t, k, b in frames]
    dur = frames[-1][0] + 1000 // FPS
    kbps = sum(len(b) for _, _, b in frames) * 8 / dur
    return Clip(config, frames, dur, kbps)


def sei(send_ns: int) -> bytes:
    """A length-prefixed SEI NAL (user data unregistered) carrying ``send_ns``."""
    payload = SEI_UUID + struct.pack(">Q", send_ns)
    nal = bytes([0x06, 0x05, len(payload)]) + payload + b"\x80"
    return struct.pack(">I", len(nal)) + nal


# --- servers -------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    rtmp_port: int
    http_port: int | None
    push_name: Callable[[int], str]  # stream index → name?query for publish
    play_name: Callable[[int], str]  # stream index → name?query for RTMP play
    flv_path: Callable[[int], str] | None = None
    hls_path: Callable[[int], str] | None = None  # LL-HLS (iotvideo; nginx-rtmp's HLS is not low-latency)

    def pids(self) -> list[int]:
        """The server process and its children (nginx workers)."""
        out = [self.proc.pid]
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    raw = Path(f"/proc/{d}/stat").read_text()
                except OSError:
                    continue
                if int(raw[raw.rindex(")") + 2:].split()[1]) == self.proc.pid:
                    out.append(int(d))
        return out

    def cpu_times(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the server process and its children (utime, stime)."""
        user = system = 0.0
        for pid in self.pids():
            try:
                raw = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            f = raw[raw.rindex(")") + 2:].split()
            user += int(f[11]) / _CLK
            system += int(f[12]) / _CLK
        return user, system

    def cpu_s(self) -> float:
        return sum(self.cpu_times())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT if self.name == "nginx-rtmp" else signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} not open in {timeout} s")


def start_nginx(nginx: str, tmp: Path) -> Server:
    d = tmp / "nginx"
    d.mkdir()
    port = free_port()
    conf = d / "nginx.conf"
    conf.write_text(f"""
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 16384;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application live {{ live on; record off; }}
    }}
}}
""")
    log = d / "stderr.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([nginx, "-p", str(d), "-c", str(conf), "-e", str(d / "error.log")],
                                stdout=out, stderr=subprocess.STDOUT)
    srv = Server("nginx-rtmp", proc, port, None, lambda i: f"s{i}", lambda i: f"s{i}")
    wait_port(port, proc, log)
    return srv


def start_iotvideo(tmp: Path, name: str = "iotvideo", extra_env: dict[str, str] | None = None) -> Server:
    """``iotvideo serve`` on free ports, its data under ``tmp/name``; ``extra_env`` on top of ours
    (``PYTHONPATH`` of another build, say: bench/media_ab.py)."""
    from iotvideo.config import Settings
    from iotvideo.domain.live import media_token_signer

    data = tmp / name
    data.mkdir()
    http, rtmp = free_port(), free_port()
    env = {**os.environ, "IOTVIDEO_LOG_LEVEL": "warning", "IOTVIDEO_NATIVE": NATIVE, "IOTVIDEO_MQTT_PORT": str(free_port()),
           "IOTVIDEO_MQTT_TLS_PORT": str(free_port()), "IOTVIDEO_RTMP_PORT": str(rtmp), **(extra_env or {})}
    exe = Path(sys.executable).with_name("iotvideo")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "iotvideo.cli"]
    cmd += ["serve", "--data-dir", str(data), "--host", "127.0.0.1", "--http-port", str(http), "--rtmp-port", str(rtmp)]
    log = tmp / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    wait_healthy(proc, http, log)
    wait_port(rtmp, proc, log)
    signer = media_token_signer(Settings(data_dir=data))
    ttl = 3600
    return Server(
        name, proc, rtmp, http,
        lambda i: f"benchcam{i}_0?token={signer.issue('push', f'benchcam{i}/0', ttl)}",
        lambda i: f"benchcam{i}_0?token={signer.issue('play', f'benchcam{i}_0', ttl)}",
        lambda i: f"/live/benchcam{i}_0.flv?token={signer.issue('play', f'benchcam{i}_0', ttl)}",
        lambda i: f"/hls/benchcam{i}_0/index.m3u8?token={signer.issue('play', f'benchcam{i}_0', ttl)}",
    )


# --- load generator ------------------------------------------------------------------------------


class Peer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: RtmpClientConnection) -> None:
        self.reader, self.writer, self.conn = reader, writer, conn
        self.backlog: list[Any] = []

    @classmethod
    async def open(cls, port: int) -> Peer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        peer = cls(reader, writer, RtmpClientConnection("live", f"rtmp://127.0.0.1:{port}/live", chunk_size=65536))
        await peer.until(Connected)
        return peer

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)

    async def until(self, kind: type, timeout: float = 15) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                while self.backlog:
                    ev = self.backlog.pop(0)
                    if isinstance(ev, kind):
                        return ev
                self.flush()
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("closed by the server")
                self.backlog.extend(self.conn.receive_data(data))

    async def start(self, action: str, name: str) -> int:
        self.conn.create_stream()
        sid = (await self.until(StreamCreated)).stream_id
        getattr(self.conn, action)(sid, name)
        st = await self.until(StreamStatus)
        if "Start" not in st.code and "Reset" not in st.code:
            raise ConnectionError(f"{action} refused: {st.code} {st.description}")
        return sid

    def close(self) -> None:
        self.writer.close()


class Publisher:
    def __init__(self, peer: Peer, sid: int, clip: Clip, stamp: bool) -> None:
        self.peer, self.sid, self.clip, self.stamp = peer, sid, clip, stamp
        self.t0 = time.monotonic()
        self.n = 0  # frames sent
        self.bytes = 0
        self.max_buffer = 0
        peer.conn.send_video(sid, 0, clip.config)
        peer.flush()
        self.drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:  # read (acks, pings) so the server never waits on us
        try:
            while data := await self.peer.reader.read(65536):
                self.peer.conn.receive_data(data)
                self.peer.flush()
        except (ConnectionError, OSError):
            pass

    def tick(self, now: float) -> None:
        frames, dur = self.clip.frames, self.clip.duration_ms
        nf = len(frames)
        conn = self.peer.conn
        while True:
            loop, i = divmod(self.n, nf)
            dts, _, body = frames[i]
            ts = loop * dur + dts
            if self.t0 + ts / 1000 > now:
                break
            if self.stamp:
                body = body + sei(time.time_ns())
            conn.send_video(self.sid, ts, body)
            self.bytes += len(body)
            self.n += 1
        self.peer.flush()
        self.max_buffer = max(self.max_buffer, self.peer.writer.transport.get_write_buffer_size())

    def close(self) -> None:
        self.drain_task.cancel()
        self.peer.close()


class Pacer:
    """One task sending every publisher's due frames every 5 ms."""

    def __init__(self) -> None:
        self.pubs: list[Publisher] = []
        self.task = asyncio.get_running_loop().create_task(self._run())
        self.late_max_ms = 0.0

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            for p in self.pubs:
                p.tick(now)
            await asyncio.sleep(0.005)

    def close(self) -> None:
        self.task.cancel()
        for p in self.pubs:
            p.close()
        self.pubs.clear()


async def publish(pacer: Pacer, srv: Server, i: int, clip: Clip, stamp: bool = False) -> Publisher:
    peer = await Peer.open(srv.rtmp_port)
    sid = await peer.start("publish", srv.push_name(i))
    pub = Publisher(peer, sid, clip, stamp)
    pacer.pubs.append(pub)
    return pub


@dataclass
class Player:
    t_start: float = 0.0
    first_key_s: float | None = None
    frames: int = 0
    bytes: int = 0
    lat_ms: list[float] = field(default_factory=list)
    error: str = ""
    task: asyncio.Task[None] | None = None
    writer: asyncio.StreamWriter | None = None

    def on_video(self, payload: bytes, stamp: bool) -> None:
        if len(payload) < 2 or payload[1] != 1:
            return
        if self.first_key_s is None:
            if payload[0] >> 4 != 1:
                return
            self.first_key_s = time.perf_counter() - self.t_start
        self.frames += 1
        if stamp:
            at = payload.rfind(SEI_UUID)
            if at >= 0:
                self.on_stamp(struct.unpack_from(">Q", payload, at + 16)[0])

    def on_stamp(self, sent_ns: int) -> None:
        if time.perf_counter() - self.t_start > 2.0:  # past the cached-GOP burst at join
            self.lat_ms.append((time.time_ns() - sent_ns) / 1e6)

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            self.writer.close()


async def _rtmp_play(pl: Player, srv: Server, i: int, stamp: bool, stop_at_first: bool) -> None:
    try:
        peer = await Peer.open(srv.rtmp_port)
        pl.writer = peer.writer
        await peer.start("play", srv.play_name(i))
        conn, reader = peer.conn, peer.reader
        pending = peer.backlog
        peer.backlog = []
        while True:
            for ev in pending:
                if isinstance(ev, MediaData) and ev.kind == "video":
                    pl.on_video(ev.payload, stamp)
            if stop_at_first and pl.first_key_s is not None:
                return
            data = await reader.read(262144)
            if not data:
                return
            pl.bytes += len(data)
            pending = conn.receive_data(data)
            out = conn.data_to_send()
            if out:
                peer.writer.write(out)
    except (ConnectionError, OSError, TimeoutError) as e:
        pl.error = repr(e)
    finally:
        if stop_at_first and pl.writer is not None:
            pl.writer.close()


async def _flv_play(pl: Player, srv: Server, i: int, stamp: bool, stop_at_first: bool) -> None:
    assert srv.http_port is not None and srv.flv_path is not None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.http_port)
        pl.writer = writer
        writer.write(f"GET {srv.flv_path(i)} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
        chunked = b"transfer-encoding: chunked" in head.lower()
        buf = bytearray()

        async def body() -> bytes:
            if not chunked:
                return await reader.read(262144)
            line = await reader.readuntil(b"\r\n")
            n = int(line.strip().split(b";")[0], 16)
            if n == 0:
                return b""
            data = await reader.readexactly(n + 2)
            return data[:-2]

        skip = 13
        while True:
            data = await body()
            if not data:
                return
            pl.bytes += len(data)
            buf += data
            if skip:
                k = min(skip, len(buf))
                del buf[:k]
                skip -= k
            pos = 0
            while pos + 11 <= len(buf):
                size = int.from_bytes(buf[pos + 1:pos + 4], "big")
                if pos + 15 + size > len(buf):
                    break
                if buf[pos] == 9:
                    pl.on_video(bytes(buf[pos + 11:pos + 11 + size]), stamp)
                pos += 15 + size
            del buf[:pos]
            if stop_at_first and pl.first_key_s is not None:
                return
    except (ConnectionError, OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
        pl.error = repr(e)
    finally:
        if stop_at_first and pl.writer is not None:
            pl.writer.close()


@dataclass
class LlHlsPlaylist:
    """What an LL-HLS player needs from a media playlist: its parts in order and where the live edge is."""

    parts: list[tuple[int, str, bool]]  # (part id, URI, independent)
    open_msn: int  # the segment the next part belongs to (the one being built)
    open_parts: int  # parts of that segment listed so far
    ended: bool

    @classmethod
    def parse(cls, text: str) -> LlHlsPlaylist:
        msn = 0
        parts: list[tuple[int, str, bool]] = []
        open_parts = 0
        for line in text.splitlines():
            if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
                msn = int(line.split(":", 1)[1])
            elif line.startswith("#EXT-X-PART:"):
                uri = line.split('URI="', 1)[1].split('"', 1)[0]
                parts.append((int(uri[4:].split(".", 1)[0]), uri, "INDEPENDENT=YES" in line))
                open_parts += 1
            elif line and not line.startswith("#"):  # a segment URI closes the segment
                msn += 1
                open_parts = 0
        return cls(parts, msn, open_parts, "#EXT-X-ENDLIST" in text)


async def _hls_play(pl: Player, srv: Server, i: int, stamp: bool, stop_at_first: bool) -> None:
    """An LL-HLS player as hls.js in low-latency mode plays: token URL → multivariant → media
    playlist; then, part after part, a blocking reload (``_HLS_msn``/``_HLS_part`` of the next
    part) and a fetch of the part(s) it lists; each fMP4 part is searched for the SEI stamps."""
    import httpx

    assert srv.http_port is not None and srv.hls_path is not None
    path = srv.hls_path(i)
    base = path.split("index.m3u8", 1)[0]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{srv.http_port}", timeout=15.0) as client:

            async def get(uri: str) -> bytes:
                r = await client.get(base + uri if not uri.startswith("/") else uri)
                if r.status_code != 200:
                    raise ConnectionError(f"{uri.split('?')[0]}: HTTP {r.status_code}")
                return r.content

            multivariant = (await get(path)).decode()
            media = next(ln for ln in multivariant.splitlines() if ln and not ln.startswith("#"))
            pl_now = LlHlsPlaylist.parse((await get(media)).decode())
            # start at the live edge: the last independent part listed, as a low-latency player would
            start = max((k for k, (_, _, ind) in enumerate(pl_now.parts) if ind), default=len(pl_now.parts))
            todo = pl_now.parts[start:]
            last_id = pl_now.parts[start - 1][0] if start else -1
            while True:
                for part_id, uri, _ in todo:
                    data = await get(uri)
                    pl.bytes += len(data)
                    if pl.first_key_s is None:
                        pl.first_key_s = time.perf_counter() - pl.t_start
                    at = data.find(SEI_UUID)
                    while at >= 0:
                        pl.frames += 1
                        if stamp:
                            pl.on_stamp(struct.unpack_from(">Q", data, at + 16)[0])
                        at = data.find(SEI_UUID, at + 24)
                    last_id = part_id
                if stop_at_first and pl.first_key_s is not None or pl_now.ended:
                    return
                sep = "&" if "?" in media else "?"
                text = (await get(f"{media}{sep}_HLS_msn={pl_now.open_msn}&_HLS_part={pl_now.open_parts}")).decode()
                pl_now = LlHlsPlaylist.parse(text)
                todo = [p for p in pl_now.parts if p[0] > last_id]
    except (ConnectionError, OSError, TimeoutError, ValueError, StopIteration, httpx.HTTPError) as e:
        pl.error = repr(e)


def play(srv: Server, i: int, kind: str = "rtmp", stamp: bool = False, stop_at_first: bool = False) -> Player:
    pl = Player(t_start=time.perf_counter())
    fn = {"rtmp": _rtmp_play, "flv": _flv_play, "hls": _hls_play}[kind]
    pl.task = asyncio.get_running_loop().create_task(fn(pl, srv, i, stamp, stop_at_first))
    return pl


def own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(q * len(s)))], 1)


async def measure(srv: Server, players: list[Player], seconds: float) -> dict[str, Any]:
    f0 = [p.frames for p in players]
    b0 = sum(p.bytes for p in players)
    (u0, s0), o0, t0 = srv.cpu_times(), own_cpu_s(), time.perf_counter()
    await asyncio.sleep(seconds)
    dt = time.perf_counter() - t0
    u1, s1 = srv.cpu_times()
    user, system = (u1 - u0) / dt, (s1 - s0) / dt
    cpu = user + system
    own = (own_cpu_s() - o0) / dt
    got = [p.frames - f for p, f in zip(players, f0)]
    expected = FPS * dt
    behind = sum(1 for g in got if g < 0.9 * expected)
    return {"server_cpu_pct": round(100 * cpu, 1), "server_user_pct": round(100 * user, 1),
            "server_sys_pct": round(100 * system, 1), "loadgen_cpu_pct": round(100 * own, 1),
            "players_behind": behind, "player_fps_min": round(min(got) / dt, 1) if got else None,
            "rx_mbit_s": round((sum(p.bytes for p in players) - b0) * 8 / dt / 1e6, 1),
            "errors": sum(1 for p in players if p.error)}


# --- phases --------------------------------------------------------------------------------------


async def phase_streams(srv: Server, clip: Clip, n: int, seconds: float) -> dict[str, Any]:
    pacer = Pacer()
    players: list[Player] = []
    try:
        for i in range(n):
            await publish(pacer, srv, 1000 + i, clip)
            players.append(play(srv, 1000 + i))
            await asyncio.sleep(0.01)
        await asyncio.sleep(3)
        m = await measure(srv, players, seconds)
        m["streams"] = n
        m["cpu_pct_per_stream"] = round(m["server_cpu_pct"] / n, 3)
        m["publisher_buffer_max_kb"] = round(max(p.max_buffer for p in pacer.pubs) / 1024)
        return m
    finally:
        for p in players:
            p.close()
        pacer.close()
        await asyncio.sleep(1)


def combine_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The streams phase over its rounds: the median of each figure (players behind, errors and the
    publishers' buffer: the worst round; the slowest player: the lowest), and the rounds themselves."""
    med = {k: round(statistics.median(r[k] for r in rounds), 3 if k == "cpu_pct_per_stream" else 1)
           for k in ("server_cpu_pct", "server_user_pct", "server_sys_pct", "loadgen_cpu_pct", "rx_mbit_s",
                     "cpu_pct_per_stream")}
    per_stream = [r["cpu_pct_per_stream"] for r in rounds]
    fps = [r["player_fps_min"] for r in rounds if r["player_fps_min"] is not None]
    return {**med, "streams": rounds[0]["streams"],
            "players_behind": max(r["players_behind"] for r in rounds),
            "errors": max(r["errors"] for r in rounds),
            "player_fps_min": min(fps) if fps else None,
            "publisher_buffer_max_kb": max(r["publisher_buffer_max_kb"] for r in rounds),
            "cpu_pct_per_stream_rounds": per_stream,
            "cpu_pct_per_stream_min": min(per_stream), "cpu_pct_per_stream_max": max(per_stream),
            "rounds": rounds}


async def streams_rounds(servers: list[Server], clip: Clip, args: argparse.Namespace,
                         watch: Callable[[Server, int], list[subprocess.Popen[bytes]]] | None = None,
                         ) -> dict[str, dict[str, Any]]:
    """The streams phase ``args.rounds`` times per server, the servers alternating round by round.
    ``watch(server, round)``, when given, starts processes that observe that round (perf, say: see
    bench/media_ab.py); the round waits for them after its measurement."""
    rounds: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
    for r in range(args.rounds):
        for srv in servers:
            say(f"  {srv.name}: {args.streams} publishers × 2 Mbit/s + 1 player each, round {r + 1}/{args.rounds}")
            watching = watch(srv, r + 1) if watch is not None else []
            m = await phase_streams(srv, clip, args.streams, args.seconds)
            for w in watching:
                w.wait()
            m["round"] = r + 1
            rounds[srv.name].append(m)
            say(f"    {m}")
            await asyncio.sleep(1)  # the previous round's connections are gone before the next one
    return {name: combine_rounds(rs) for name, rs in rounds.items()}


async def phase_players(srv: Server, clip: Clip, steps: list[int], seconds: float,
                        kind: str = "rtmp") -> dict[str, Any]:
    """One round: the publisher alone, then players ramped through ``steps``; every reading over the
    same window. Stops early once more than half the players fall behind."""
    pacer = Pacer()
    players: list[Player] = []
    rows = []
    try:
        await publish(pacer, srv, 1, clip)
        await asyncio.sleep(2)
        idle = await measure(srv, [], seconds)
        for n in steps:
            while len(players) < n:
                players.append(play(srv, 1, kind))
                if len(players) % 20 == 0:
                    await asyncio.sleep(0.02)
            await asyncio.sleep(2)
            m = await measure(srv, players, seconds)
            m["players"] = n
            rows.append(m)
            say(f"    {srv.name}: {n} {kind} players: server {m['server_cpu_pct']} % core, behind {m['players_behind']}, "
                f"loadgen {m['loadgen_cpu_pct']} %")
            if m["players_behind"] > n // 2:
                break
        return {"publisher_only_cpu_pct": idle["server_cpu_pct"], "steps": rows}
    finally:
        for p in players:
            p.close()
        pacer.close()
        await asyncio.sleep(1)


def slope(points: list[tuple[float, float]]) -> float | None:
    """The least-squares slope of y over x."""
    if len({x for x, _ in points}) < 2:
        return None
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def fit_players(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The players phase over its rounds. CPU per player is the slope of the least-squares line of
    server CPU over players through every round's readings: the publisher alone (0 players) and each
    step at which no player fell behind and none failed (past that the server is saturated and CPU
    no longer grows with players). Also each round's own slope, and each step's median over rounds."""
    def ok(s: dict[str, Any]) -> bool:
        return s["players_behind"] == 0 and s["errors"] == 0

    def points(r: dict[str, Any]) -> list[tuple[float, float]]:
        return [(0, r["publisher_only_cpu_pct"])] + [(s["players"], s["server_cpu_pct"]) for s in r["steps"] if ok(s)]

    per_player = slope([p for r in rounds for p in points(r)])
    per_round = [s for s in (slope(points(r)) for r in rounds) if s is not None]
    steps = []
    for n in sorted({s["players"] for r in rounds for s in r["steps"]}):
        at = [s for r in rounds for s in r["steps"] if s["players"] == n]
        steps.append({"players": n, "rounds": len(at),
                      "server_cpu_pct": round(statistics.median(s["server_cpu_pct"] for s in at), 1),
                      "players_behind": max(s["players_behind"] for s in at),
                      "errors": max(s["errors"] for s in at)})
    clean = [s["players"] for s in steps if s["rounds"] == len(rounds) and ok(s)]

    def per_core(pp: float | None) -> int | None:
        return round(100 / pp) if pp and pp > 0 else None

    return {"cpu_pct_per_player": round(per_player, 4) if per_player is not None else None,
            "players_per_core": per_core(per_player),
            "players_per_core_rounds": [per_core(s) for s in per_round],
            "publisher_only_cpu_pct": round(statistics.median(r["publisher_only_cpu_pct"] for r in rounds), 1),
            "max_players_ok": max(clean) if clean else 0, "steps": steps, "rounds": rounds}


async def players_rounds(servers: list[Server], clip: Clip, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The players phase ``args.rounds`` times per server and kind, alternating round by round as
    the streams phase does: RTMP players on each server, then HTTP-FLV players where the server has
    HTTP-FLV. Keys: ``players`` and ``players_flv`` per server name."""
    rounds: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in range(args.rounds):
        for srv in servers:
            for kind in ["rtmp"] + (["flv"] if srv.flv_path else []):
                say(f"  {srv.name}: {kind} players of one 600 kbit/s stream, round {r + 1}/{args.rounds}")
                rounds.setdefault((srv.name, kind), []).append(
                    await phase_players(srv, clip, args.steps, args.seconds, kind))
    out: dict[str, dict[str, Any]] = {s.name: {} for s in servers}
    for (name, kind), rs in rounds.items():
        out[name]["players" if kind == "rtmp" else "players_flv"] = fit_players(rs)
    return out


async def phase_first_frame(srv: Server, clip: Clip, kind: str, n: int) -> dict[str, Any]:
    pacer = Pacer()
    try:
        await publish(pacer, srv, 2, clip)
        await asyncio.sleep(2.5)
        times, errors = [], []
        for _ in range(n):
            pl = play(srv, 2, kind, stop_at_first=True)
            try:
                await asyncio.wait_for(asyncio.shield(pl.task), 5)  # type: ignore[arg-type]
            except TimeoutError:
                pl.close()
            if pl.first_key_s is not None:
                times.append(pl.first_key_s * 1000)
            else:
                errors.append(pl.error or "timeout")
            await asyncio.sleep(random.uniform(0.05, 1.05))  # random phase in the 1 s GOP
        return {"p50_ms": pct(times, 0.5), "p95_ms": pct(times, 0.95), "n": len(times), "errors": len(errors),
                "error": errors[0] if errors else ""}
    finally:
        pacer.close()
        await asyncio.sleep(0.5)


async def phase_g2g(srv: Server, clip: Clip, kinds: list[str], seconds: float) -> dict[str, Any]:
    pacer = Pacer()
    players: dict[str, Player] = {}
    try:
        await publish(pacer, srv, 3, clip, stamp=True)
        await asyncio.sleep(0.5)
        players = {k: play(srv, 3, k, stamp=True) for k in kinds}
        await asyncio.sleep(seconds)
        return {k: {"p50_ms": pct(p.lat_ms, 0.5), "p95_ms": pct(p.lat_ms, 0.95), "max_ms": pct(p.lat_ms, 1.0),
                    "n": len(p.lat_ms), "error": p.error} for k, p in players.items()}
    finally:
        for p in players.values():
            p.close()
        pacer.close()
        await asyncio.sleep(0.5)


async def run_server(srv: Server, clips: dict[str, Clip], args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {}
    kinds = ["rtmp"] + (["flv"] if srv.flv_path else [])
    say(f"  {srv.name}: time to first frame (live stream)")
    res["first_frame"] = {k: await phase_first_frame(srv, clips["600k"], k, 20) for k in kinds}
    say(f"  {srv.name}: glass-to-glass (network path)")
    res["g2g"] = await phase_g2g(srv, clips["600k"], kinds + (["hls"] if srv.hls_path else []), 6 if args.quick else 10)
    return res


# --- report --------------------------------------------------------------------------------------


def pin(servers: list[Server]) -> str | None:
    """Servers on the last CPU, this load generator on the others (every thread of each), so that
    neither one's scheduling moves the other's figures; None when there is one CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    srv, load = {cpus[-1]}, set(cpus[:-1])
    for s in servers:
        for pid in s.pids():
            for tid in os.listdir(f"/proc/{pid}/task"):
                try:
                    os.sched_setaffinity(int(tid), srv)
                except OSError:
                    pass
    os.sched_setaffinity(0, load)
    return f"servers on CPU {cpus[-1]}, load generator on CPU {','.join(map(str, sorted(load)))}"


def machine() -> dict[str, Any]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    nginx_v = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1]
    mod_v = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libnginx-mod-rtmp"], capture_output=True,
                           text=True).stdout.strip()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    return {"commit": commit or "-", "cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "nginx": nginx_v, "libnginx_mod_rtmp": mod_v, "loadgen_loop": loop,
            "implementation": implementation()}


def implementation() -> str:
    """What the iotvideo server runs the media hot path with (``--python``: the pure-Python path)."""
    if NATIVE == "0":
        return "pure Python (IOTVIDEO_NATIVE=0)"
    from iotvideo.media import accel

    return accel.describe()


def summarize(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"bench": "media", "quick": args.quick, "streams": args.streams, "rounds": args.rounds,
                           "iotvideo_implementation": implementation(), "pinned": getattr(args, "pinned", None)}
    for name, r in results.items():
        key = "iotvideo" if name == "iotvideo" else "nginx_rtmp"
        s = r["streams"]
        out[key] = {
            "cpu_pct_per_stream": s["cpu_pct_per_stream"], "server_cpu_pct": s["server_cpu_pct"],
            "cpu_pct_per_stream_rounds": s["cpu_pct_per_stream_rounds"],
            "server_user_pct": s["server_user_pct"], "server_sys_pct": s["server_sys_pct"],
            "streams_players_behind": s["players_behind"],
            "players_per_core": r["players"]["players_per_core"], "max_players_ok": r["players"]["max_players_ok"],
            "players_per_core_rounds": r["players"]["players_per_core_rounds"],
            "cpu_pct_per_player": r["players"]["cpu_pct_per_player"],
            "flv_players_per_core": r["players_flv"]["players_per_core"] if r.get("players_flv") else None,
            "ttff_live_ms": {k: v["p50_ms"] for k, v in r["first_frame"].items()},
            "ttff_live_p95_ms": {k: v["p95_ms"] for k, v in r["first_frame"].items()},
            "g2g_ms": {k: v["p50_ms"] for k, v in r["g2g"].items()},
            "g2g_p95_ms": {k: v["p95_ms"] for k, v in r["g2g"].items()},
        }
    idle = getattr(args, "idle_camera", None) or {}
    out["iotvideo_idle_camera_ttff_ms"] = {k: (idle.get(row) or {}).get("p50_ms") for k, row in IDLE_CAMERA_ROWS.items()}
    out["iotvideo_idle_camera_ttff_p95_ms"] = {k: (idle.get(row) or {}).get("p95_ms")
                                               for k, row in IDLE_CAMERA_ROWS.items()}
    return out


def table(results: dict[str, dict[str, Any]]) -> str:
    names = list(results)
    rows: list[tuple[str, ...]] = []

    def row(label: str, fn: Callable[[dict[str, Any]], Any]) -> None:
        vals = []
        for n in names:
            try:
                v = fn(results[n])
            except (KeyError, IndexError, TypeError):
                v = None
            vals.append("-" if v is None else str(v))
        rows.append((label, *vals))

    def spread(s: dict[str, Any]) -> str:
        n = len(s.get("cpu_pct_per_stream_rounds") or [])
        if n < 2:
            return f"{s['cpu_pct_per_stream']} (1 round)"
        return f"{s['cpu_pct_per_stream']} ({s['cpu_pct_per_stream_min']}–{s['cpu_pct_per_stream_max']}, {n} rounds)"

    row("streams (2 Mbit/s publishers, 1 RTMP player each)", lambda r: r["streams"]["streams"])
    row("  server CPU, % of one core", lambda r: r["streams"]["server_cpu_pct"])
    row("    user / system", lambda r: f"{r['streams']['server_user_pct']} / {r['streams']['server_sys_pct']}")
    row("  CPU per stream, % of one core: median (min–max)", lambda r: spread(r["streams"]))
    row("  players behind (< 90 % of frames) / errors",
        lambda r: f"{r['streams']['players_behind']} / {r['streams']['errors']}")
    row("  received by the players, Mbit/s", lambda r: r["streams"]["rx_mbit_s"])
    row("  load generator CPU, % of one core", lambda r: r["streams"]["loadgen_cpu_pct"])

    def with_rounds(p: dict[str, Any]) -> str:
        each = [x for x in p["players_per_core_rounds"] if x]
        spread = f" (rounds {min(each)}–{max(each)})" if len(each) > 1 else ""
        return f"{p['players_per_core']}{spread}"

    row("one 600 kbit/s stream, publisher alone: CPU %", lambda r: r["players"]["publisher_only_cpu_pct"])
    for i in range(5):
        row(f"  players step {i + 1}: CPU % (median), behind (worst)",
            lambda r, i=i: f"{r['players']['steps'][i]['players']}: CPU {r['players']['steps'][i]['server_cpu_pct']} %, "
                           f"behind {r['players']['steps'][i]['players_behind']}")
    row("  CPU per player, % of one core (slope)", lambda r: r["players"]["cpu_pct_per_player"])
    row("  players per core (100 / slope)", lambda r: with_rounds(r["players"]))
    row("HTTP-FLV players per core (100 / slope)",
        lambda r: f"{with_rounds(r['players_flv'])} (at {r['players_flv']['steps'][-1]['players']}: "
                  f"behind {r['players_flv']['steps'][-1]['players_behind']})")
    for k in ("rtmp", "flv"):
        row(f"time to first key frame, live, {k}: p50 / p95 ms",
            lambda r, k=k: f"{r['first_frame'][k]['p50_ms']} / {r['first_frame'][k]['p95_ms']}")
        row(f"glass-to-glass (network path), {k}: p50 / p95 ms",
            lambda r, k=k: f"{r['g2g'][k]['p50_ms']} / {r['g2g'][k]['p95_ms']}")
    row("glass-to-glass (network path), LL-HLS: p50 / p95 ms",
        lambda r: f"{r['g2g']['hls']['p50_ms']} / {r['g2g']['hls']['p95_ms']}" if "hls" in r["g2g"]
        else "n/a (no LL-HLS)")
    w = [max(len(r[c]) for r in rows + [("", *names)]) for c in range(len(names) + 1)]
    lines = ["| " + " | ".join(h.ljust(w[c]) for c, h in enumerate(("", *names))) + " |",
             "|" + "|".join("-" * (x + 2) for x in w) + "|"]
    lines += ["| " + " | ".join(v.ljust(w[c]) for c, v in enumerate(r)) + " |" for r in rows]
    return "\n".join(lines)


def goals(summary: dict[str, Any]) -> str:
    """One bullet: the issue's goals, met or not, from the summary."""
    iv, ng = summary.get("iotvideo") or {}, summary.get("nginx_rtmp") or {}
    if not iv:
        return ""
    def ok(b: bool) -> str:
        return "met" if b else "**not met**"
    parts = [f"time to first frame, live, < 150 ms: {ok(max(v or 1e9 for v in iv['ttff_live_p95_ms'].values()) < 150)}",
             f"idle camera < 1 s (p50, bench/live_start.py): "
             f"{ok(max(v or 1e9 for v in summary['iotvideo_idle_camera_ttff_ms'].values()) < 1000)}",
             f"glass-to-glass < 300 ms RTMP/FLV (network path): "
             f"{ok(max(iv['g2g_p95_ms'].get(k) or 1e9 for k in ('rtmp', 'flv')) < 300)}",
             f"LL-HLS glass-to-glass < 1.5 s (network path): {ok((iv['g2g_p95_ms'].get('hls') or 1e9) < 1500)}"]
    if ng:
        parts.append(f"CPU per stream ≤ nginx-rtmp: {ok(iv['cpu_pct_per_stream'] <= ng['cpu_pct_per_stream'])} "
                     f"({iv['cpu_pct_per_stream'] / ng['cpu_pct_per_stream']:.1f}× nginx-rtmp's)")
        parts.append(f"players per core ≥ nginx-rtmp: {ok((iv['players_per_core'] or 0) >= (ng['players_per_core'] or 0))} "
                     f"({iv['players_per_core']} vs {ng['players_per_core']}, from the slope of CPU over players; "
                     f"both served {iv['max_players_ok']} / {ng['max_players_ok']} players with none behind)")
    return "* **Goals**: " + "; ".join(parts) + "."


def write_docs(cmd: str, mach: dict[str, Any], tbl: str, summary: dict[str, Any]) -> None:
    import live_start

    idle_rows = summary.get("_idle_rows") or {}
    idle_table = "\n".join("  " + line for line in live_start.table(idle_rows, summary.get("_idle_n", 0)).splitlines())

    def idle_ms(k: str) -> str:
        p50 = summary["iotvideo_idle_camera_ttff_ms"].get(k)
        p95 = summary["iotvideo_idle_camera_ttff_p95_ms"].get(k)
        return "-" if p50 is None else f"{p50} / {p95} ms"

    n_rounds = summary.get("rounds", 1)
    rounds_text = ("in one round per server (`--rounds 1`: no spread to show)" if n_rounds == 1 else
                   f"in {n_rounds} rounds per server that alternate the servers\n  (nginx-rtmp, iotvideo, "
                   "nginx-rtmp, ...), each with a fresh set of publishers and players, so that a\n  drift of "
                   "the machine hits both alike. Its figures are the median of the rounds (CPU per\n  stream: "
                   "median and min–max; players behind and errors: the worst round)")

    text = f"""## Media (bench/media.py)

Command: `{cmd}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).

Machine: {mach['cpu']}, {mach['cores']} cores, kernel {mach['kernel']}, Python {mach['python']},
nginx {mach['nginx']} with libnginx-mod-rtmp {mach['libnginx_mod_rtmp']} (one worker, `live on`,
chunk_size 4096); iotvideo at {mach['commit']} (`iotvideo serve`, log level warning, one process;
{mach['implementation']}).
Both servers ran on the same machine (both started for the whole run, the one not under load
idle), under the same load from one load-generator process (asyncio, {mach['loadgen_loop']}; our
sans-IO RTMP client) replaying pre-encoded H.264 (1 s GOP, no B-frames, no audio; 720p ≈
{summary.get('_kbps_2m')} kbit/s and 360p ≈ {summary.get('_kbps_600k')} kbit/s) in real time
({summary.get('pinned') or 'no CPU placement'}). CPU is
server CPU (user + system from /proc/PID/stat, also shown apart; nginx: master + worker) in % of one
core.

{tbl}

* **CPU per stream** ran first, {rounds_text}.
* **Players per core** ran second, in as many rounds, alternating the same way (HTTP-FLV players
  after RTMP players in each of iotvideo's rounds). A round reads the server's CPU with the
  publisher alone, then at each step of players, every reading over the same window. CPU per
  player is the slope of the least-squares line of CPU over players through all rounds' readings
  (steps where a player fell behind are left out: the server is saturated there); players per core
  is 100 / slope, and each round's own slope gives the spread. The steps' rows are medians over the
  rounds. The other phases then ran once per server, one server after the other.
* **Time to first frame** is connect → first video *key* frame (the first decodable one) on a
  stream already live. iotvideo keeps the latest GOP and starts a player on it at once;
  nginx-rtmp (default `wait_key off`, no GOP cache) sends the next frame, and a decoder must
  wait for the next key frame (on average half a GOP). Stock nginx-rtmp has no HTTP-FLV.
* **Idle camera, from the API call** (`bench/live_start.py`, run by this bench: the official
  SDK's `QueryLiveStreaming` → first frame, real `iotvideo serve` + `iotvideo camera`, the camera
  idle before each trial), p50 / p95: RTMP {idle_ms('rtmp')}, HTTP-FLV {idle_ms('flv')}, LL-HLS
  {idle_ms('hls')} with FFmpeg (first decoded frame; FFmpeg's own `analyzeduration` of 0.5 s is in
  these figures), LL-HLS with hls.js in Chromium {idle_ms('hls_js')} (first frame presented); goal < 1 s.
  The camera's first key frame reaches a raw HTTP-FLV reader in tens of ms (`flv/wire`), mpegts.js
  shows it within ≈ 0.1 s; the rest of the FFmpeg figures is FFmpeg probing:

{idle_table}

* **Glass-to-glass** here is the network path only: the publisher appends an SEI NAL with
  its wall-clock send time to each frame and the player reads it on arrival, on loopback. It
  excludes capture, encoding, the player's buffer and decoding (a camera encoder at
  `zerolatency` adds about a frame; ffplay/VLC buffer far more than the server adds).
  LL-HLS: a player doing what hls.js does in low-latency mode (blocking reload of the
  playlist for the next part, then that part; stamps read from the fMP4 parts); a frame
  waits for its part to be complete (parts ≈ 1/3 s). A real hls.js adds its hold-back
  (PART-HOLD-BACK, 1 s) on top; nginx-rtmp's HLS is not low-latency (n/a).
{goals(summary)}
* Players "behind" received < 90 % of the frames the publisher sent during the window.

Final JSON line:

```json
{json.dumps({k: v for k, v in summary.items() if not k.startswith('_')})}
```
"""
    block = f"{MARK_BEGIN}\n{text.rstrip()}\n{MARK_END}\n"
    cur = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    if MARK_BEGIN in cur and MARK_END in cur:
        pre, post = cur.split(MARK_BEGIN)[0], cur.split(MARK_END, 1)[1]
        DOCS.write_text(pre + block + post.lstrip("\n"))
    else:
        DOCS.write_text(cur.rstrip() + "\n\n" + block)


async def amain(args: argparse.Namespace, servers: list[Server], clips: dict[str, Clip]) -> dict[str, Any]:
    say(f"== CPU per stream: {args.rounds} round(s), alternating {' / '.join(s.name for s in servers)}")
    streams = await streams_rounds(servers, clips["2m"], args)
    say(f"== players of one stream: {args.rounds} round(s), alternating {' / '.join(s.name for s in servers)}")
    players = await players_rounds(servers, clips["600k"], args)
    results = {}
    for srv in servers:
        say(f"== {srv.name}")
        results[srv.name] = {"streams": streams[srv.name], **players[srv.name], **await run_server(srv, clips, args)}
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="50 streams, players up to 200, shorter windows, 1 streams round")
    ap.add_argument("--streams", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None, help="measurement window per step")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds of the CPU-per-stream phase per server, alternating servers (default 3, --quick 1)")
    ap.add_argument("--only", choices=["iotvideo", "nginx"], default=None)
    ap.add_argument("--write-docs", action="store_true", help="write the section in docs/benchmarks.md")
    ap.add_argument("--python", action="store_true", help="run iotvideo's media hot path in pure Python (IOTVIDEO_NATIVE=0)")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="leave the servers and the load generator to the scheduler (default: servers on the last CPU, "
                         "the load generator on the others)")
    args = ap.parse_args()
    global NATIVE
    NATIVE = "0" if args.python else "1"
    args.streams = args.streams or (50 if args.quick else 200)
    args.seconds = args.seconds or (6.0 if args.quick else 10.0)
    args.rounds = max(1, args.rounds or (1 if args.quick else 3))
    args.steps = [50, 100, 200] if args.quick else [50, 100, 200, 400]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(65536, resource.getrlimit(resource.RLIMIT_NOFILE)[1]),) * 2)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    nginx = ensure_nginx_rtmp() if args.only != "iotvideo" else "nginx"
    cache = Path(tempfile.gettempdir()) / "iotvideo-bench-media"
    cache.mkdir(exist_ok=True)
    encode_clip(cache / "720p-2m.flv", "1280x720", 2000)
    encode_clip(cache / "360p-600k.flv", "640x360", 600)
    clips = {"2m": load_clip(cache / "720p-2m.flv"), "600k": load_clip(cache / "360p-600k.flv")}
    say(f"clips: {', '.join(f'{k} {c.kbps:.0f} kbit/s, {len(c.frames)} frames' for k, c in clips.items())}")
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-media-") as td:
        tmp = Path(td)
        servers: list[Server] = []
        try:
            if args.only != "iotvideo":
                servers.append(start_nginx(nginx, tmp))
            if args.only != "nginx":
                servers.append(start_iotvideo(tmp))
            everywhere = os.sched_getaffinity(0)
            pinned = pin(servers) if args.pin else None
            try:
                results = asyncio.run(amain(args, servers, clips))
            finally:
                os.sched_setaffinity(0, everywhere)
        finally:
            for s in servers:
                s.stop()
    args.pinned = pinned
    if args.only != "nginx":
        import live_start

        say("== iotvideo: idle camera → first frame from the API call (bench/live_start.py)")
        args.idle_camera = live_start.measure(5 if args.quick else 10, ("rtmp", "flv", "hls"))
        args.idle_n = 5 if args.quick else 10
    summary = summarize(results, args)
    summary["seconds"] = round(time.time() - t_start)
    summary["_kbps_2m"], summary["_kbps_600k"] = round(clips["2m"].kbps), round(clips["600k"].kbps)
    summary["_idle_rows"], summary["_idle_n"] = getattr(args, "idle_camera", None), getattr(args, "idle_n", 0)
    tbl = table(results)
    print(tbl)
    (cache / "last.json").write_text(json.dumps({"results": results, "summary": summary}, indent=1))
    if args.write_docs:
        cmd = (".venv/bin/python bench/media.py" + (" --quick" if args.quick else "") + (" --python" if args.python else "")
               + ("" if args.pin else " --no-pin")
               + (f" --rounds {args.rounds}" if args.rounds != (1 if args.quick else 3) else "") + " --write-docs")
        write_docs(cmd, machine(), tbl, summary)
    print(json.dumps({k: v for k, v in summary.items() if not k.startswith("_")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
