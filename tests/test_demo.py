"""README's first command, end to end: ``iotvideo demo`` (what scripts/demo.sh runs after setup)
prints a console URL with credentials; signing in with them and asking the console for the demo
camera's live URL gives video that FFmpeg (PyAV) decodes. A second start reuses the demo's objects.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conftest import free_port

av = pytest.importorskip("av")


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    lines: list[str]
    http: int
    mqtt: int

    def printed(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = re.search(pattern, line)
                if m:
                    return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        pytest.fail(f"the demo never printed {pattern!r}; it printed:\n" + "".join(self.lines))


@pytest.fixture()
def demo_dir(tmp_path: Path) -> Path:
    return tmp_path / "demo-data"


def _exe() -> list[str]:
    exe = Path(sys.executable).with_name("iotvideo")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "iotvideo.cli"]


def start_demo(data_dir: Path) -> Demo:
    http, mqtt = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTVIDEO_")}
    proc = subprocess.Popen([*_exe(), "demo", "--data-dir", str(data_dir), "--host", "127.0.0.1",
                             "--http-port", str(http), "--mqtt-port", str(mqtt)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=pump, daemon=True).start()
    return Demo(proc, lines, http, mqtt)


def stop_demo(demo: Demo) -> None:
    demo.proc.send_signal(signal.SIGINT)  # Ctrl-C, as the demo says
    try:
        demo.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        demo.proc.kill()
        demo.proc.wait()
        pytest.fail("the demo did not stop on Ctrl-C")


@pytest.fixture()
def demo(demo_dir: Path) -> Iterator[Demo]:
    d = start_demo(demo_dir)
    try:
        yield d
    finally:
        if d.proc.poll() is None:
            stop_demo(d)


def live_url(base: str, user: str, password: str, iot_id: str, scheme: str) -> str:
    """Sign in to the console as a person would, then ask it for the camera's live URL."""
    with httpx.Client(base_url=base, follow_redirects=False, timeout=10) as c:
        r = c.post("/console/login", data={"username": user, "password": password, "next": "/console/"})
        assert r.status_code == 303, r.text
        listing = c.get("/console/")
        assert listing.status_code == 200 and iot_id in listing.text
        deadline = time.monotonic() + 30
        while True:  # the virtual camera is still connecting right after start
            r = c.post(f"/console/api/live/{iot_id}?scheme={scheme}")
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert r.status_code == 200, r.text
        return base + r.json()["url"]


def decoded_frames(url: str, want: int = 10, max_s: float = 20.0) -> list[tuple[int, int]]:
    sizes: list[tuple[int, int]] = []
    t0 = time.monotonic()
    with av.open(url, timeout=10, options={"analyzeduration": "500000", "probesize": "65536"}) as c:
        for packet in c.demux(c.streams.video[0]):
            for frame in packet.decode():
                sizes.append((frame.width, frame.height))
            if len(sizes) >= want or time.monotonic() - t0 > max_s:
                break
    return sizes


def test_demo_prints_credentials_that_lead_to_live_video(demo: Demo, demo_dir: Path) -> None:
    console = demo.printed(r"Web console\s+(http://\S+/console/)\s+\(user (\S+), password (\S+)\)")
    url, user, password = console.groups()
    assert url == f"http://127.0.0.1:{demo.http}/console/"
    key_id = demo.printed(r"AccessKeyId\s+(\S+)").group(1)
    iot_id = demo.printed(r"IotId=(\S+)").group(1)
    demo.printed(r"AccessKeySecret\s+\S+")
    base = url.removesuffix("/console/")
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert demo.proc.poll() is None, "".join(demo.lines)
        assert time.monotonic() < deadline, "the demo server never became ready"
        time.sleep(0.2)

    for scheme in ("flv", "hls"):
        frames = decoded_frames(live_url(base, user, password, iot_id, scheme))
        assert len(frames) >= 10, (scheme, frames)
        assert frames[0][0] > 0 and frames[0][1] > 0

    stop_demo(demo)
    # the camera subprocess went with it: nothing of the demo's is left running
    out = subprocess.run(["pgrep", "-f", f"camera --server 127.0.0.1 --mqtt-port {demo.mqtt} |{demo_dir}"],
                         capture_output=True, text=True)
    assert not [p for p in out.stdout.split() if p.strip()], out.stdout

    # a second start reuses the demo's objects (same key, same camera), with a working password
    again = start_demo(demo_dir)
    try:
        assert again.printed(r"AccessKeyId\s+(\S+)").group(1) == key_id
        assert again.printed(r"IotId=(\S+)").group(1) == iot_id
    finally:
        stop_demo(again)
