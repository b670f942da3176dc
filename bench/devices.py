"""Device-link benchmark: ``.venv/bin/python bench/devices.py [--quick] [--counts 1000,5000,10000]``.

What it does, all by itself:

1. seeds a fresh data directory (SQLite; or a fresh PostgreSQL database created, and
   dropped at the end, on the server of ``--database-url``) through SQLAlchemy Core on the
   schema tables: one tenant (with its default template), one AccessKey, one product and
   10,000 devices (``--devices``), every secret sealed with the server's ``SecretBox``;
2. for each N of ``--counts``, on a FRESH ``iotvideo serve`` (free HTTP and MQTT ports,
   ``IOTVIDEO_LOG_LEVEL=warning``), so that each N's memory figure starts from the same
   state:
   * warms the server up (a few signed calls) and reads its RSS (``/proc/PID/status``);
   * starts the simulator, bench/device_sim.py, in its own process: N lean device
     connections (asyncio Protocols on the project's sans-IO MQTT codec), each with its
     real secret (hmacsha256), keep-alive 300 s, opened at ``--connect-rate`` per second;
   * times the connect (simulator: first SYN to last CONNACK) and waits until the
     database shows the N devices ONLINE; reads the RSS again: memory per connection;
   * drives ``InvokeThingService`` through the HTTP API with V1-signed requests,
     open-loop at ``--rate`` calls/s for ``--duration`` s, each on a random device among
     the N: first the sync service ``GetDeviceStatus`` (RRPC: the HTTP answer waits for
     the device's reply), then the async ``ForceIFrame`` (answered at once). Latency is
     counted from the moment a call was DUE (open loop: a late send counts against it);
   * disconnects all and waits until the database shows them OFFLINE;
3. at the largest N (unless ``--no-profile``): py-spy (``--nonblocking``) on the server
   with the N devices idle, under the sync-call load, and during two reconnect storms
   offered at ``--storm-rate`` (first with the server's credential cache expired, then
   cached), sorted by category, with the connect rate each storm achieved; and a second
   server run under ``tracemalloc`` (``--no-memory-profile`` to skip) that says which
   source lines hold the memory of a connection;
4. prints a table per N, the machine, the goal (10,000 devices on one node, sync p99 <
   50 ms), and ends with ONE JSON line of all the figures. ``--write-docs`` puts the
   results into docs/benchmarks.md between ``<!-- bench/devices.py:begin -->`` and
   ``<!-- bench/devices.py:end -->`` (only the generated part inside them is replaced;
   ``--docs-from FILE`` does that from the JSON line of an earlier run).

Loopback only; every phase is bounded in count and time. Exit status 1 when a call
failed, a device could not connect or did not go ONLINE/OFFLINE in time, or the server
logged an error; else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import queue
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SIM = BENCH / "device_sim.py"
DOCS = ROOT / "docs" / "benchmarks.md"
API_VERSION = "2018-01-20"
from benchkit import cpu_and_memory, ensure_py_spy, free_port, say, v1_request, version_of, wait_healthy  # noqa: E402
GOAL_DEVICES = 10_000
GOAL_P99_MS = 50.0
MARK_BEGIN = "<!-- bench/devices.py:begin -->"
MARK_END = "<!-- bench/devices.py:end -->"
GEN_BEGIN = "<!-- bench/devices.py:generated:begin (written by `bench/devices.py --write-docs`) -->"
GEN_END = "<!-- bench/devices.py:generated:end -->"
SECTION_TITLE = "## Device link (bench/devices.py)"

for _v in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
    os.environ.pop(_v, None)
# The bench decides the server's settings itself; none may leak in from the shell (the
# tracemalloc harness, started by the bench itself, takes its settings from the environment).
if "--_traced-server" not in sys.argv:
    for _v in [k for k in os.environ if k.startswith("IOTVIDEO_") and k != "IOTVIDEO_TEST_PG_ADMIN_URL"]:
        os.environ.pop(_v)


# --- /proc ------------------------------------------------------------------------

_CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (psutil is not installed)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
        f = raw[raw.rindex(")") + 2:].split()
        return (int(f[11]) + int(f[12])) / _CLK
    except (OSError, ValueError, IndexError):
        return 0.0


def busy_s() -> float:
    """CPU seconds spent busy on the whole machine since boot."""
    try:
        f = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return (int(f[1]) + int(f[2]) + int(f[3])) / _CLK
    except (OSError, IndexError, ValueError):
        return 0.0


class CpuMeter:
    """% of one core used by the server, the simulator, this process and everyone else."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.t0 = time.perf_counter()
        self.c0 = {k: cpu_s(p) for k, p in pids.items()}
        self.me0 = self._me()
        self.b0 = busy_s()

    @staticmethod
    def _me() -> float:
        t = os.times()
        return t.user + t.system

    def stop(self) -> dict[str, float]:
        secs = max(1e-6, time.perf_counter() - self.t0)
        use = {k: cpu_s(p) - self.c0[k] for k, p in self.pids.items()}
        use["loadgen"] = self._me() - self.me0
        other = max(0.0, busy_s() - self.b0 - sum(use.values()))
        out = {f"{k}_cpu_pct": round(100 * v / secs, 1) for k, v in use.items()}
        out["other_cpu_pct"] = round(100 * other / secs, 1)
        return out


NOISY_PCT = 25.0  # others' CPU during a phase, in % of one core, above which it is noisy


def background_cpu_pct(seconds: float = 1.0) -> float:
    """% of one core busy on the whole machine over ``seconds``."""
    b0, t0 = busy_s(), time.perf_counter()
    time.sleep(seconds)
    return 100 * (busy_s() - b0) / (time.perf_counter() - t0)


def wait_quiet(max_wait: float, own_pct: float = 0.0, threshold_pct: float = 20.0) -> float:
    """Waits (up to ``max_wait`` s) until the rest of the machine is nearly idle; the last
    reading of others' CPU (``own_pct``: what our own idle processes use, subtracted)."""
    deadline = time.time() + max_wait
    said = False
    while True:
        bg = max(0.0, background_cpu_pct(1.0) - own_pct)
        if bg <= threshold_pct or time.time() >= deadline:
            return bg
        if not said:
            say(f"    machine busy ({bg:.0f} % of a core used by others): waiting up to {max_wait:g} s for quiet")
            said = True


def machine_info() -> dict[str, Any]:
    cpu, mem_gib = cpu_and_memory()
    import resource

    tree = "-"
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        tree = (head or "?") + (" + uncommitted changes in src/" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {
        "tree": tree, "cpu": cpu, "cores": os.cpu_count(), "mem_gib": mem_gib, "kernel": platform.release(),
        "python": platform.python_version(), "uvicorn": version_of("uvicorn"), "uvloop": version_of("uvloop"),
        "sqlalchemy": version_of("SQLAlchemy"), "aiosqlite": version_of("aiosqlite"),
        "asyncpg": version_of("asyncpg"), "orjson": version_of("orjson"),
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
    }


# --- PostgreSQL -------------------------------------------------------------------

async def _pg(url: str, sql: str, *args: Any) -> Any:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def pg_db_url(admin_url: str, name: str) -> str:
    return admin_url.rsplit("/", 1)[0] + "/" + name


# --- seeding ----------------------------------------------------------------------

@dataclass
class Seed:
    tenant_id: str
    key_id: str
    secret: str
    product_key: str
    devices: list[tuple[str, str, str]]  # (iot_id, device_name, device secret), in name order
    seconds: float


def device_name(i: int) -> str:
    return f"bench{i:06d}"


async def _seed(data_dir: Path, database_url: str | None, n_devices: int) -> Seed:
    """Schema-level bulk insert (SQLAlchemy Core); the server's SecretBox seals the secrets."""
    from sqlalchemy import func, insert, select

    from iotvideo import ids
    from iotvideo.config import Settings
    from iotvideo.services import Services
    from iotvideo.store.schema import access_keys, devices, products, tenants, time_templates

    t0 = time.perf_counter()
    sv = await Services.open(Settings(data_dir=data_dir, database_url=database_url))  # migrates
    try:
        box = sv.box
        now = int(time.time() * 1000)
        tenant_id, key_id, secret = ids.object_id(), ids.access_key_id(), ids.access_key_secret()
        pk = ids.product_key()
        devs = [(ids.iot_id(), device_name(i), ids.device_secret()) for i in range(n_devices)]
        async with sv.db.begin() as conn:
            await conn.execute(insert(tenants).values(id=tenant_id, name="bench-devices", created_ms=now))
            await conn.execute(insert(time_templates).values(
                id=ids.object_id(), tenant_id=tenant_id, name="all day", all_day=True, is_default=True,
                sections="[]", created_ms=now))
            await conn.execute(insert(access_keys).values(
                id=key_id, tenant_id=tenant_id, secret_sealed=box.seal(secret), enabled=True, created_ms=now))
            await conn.execute(insert(products).values(
                product_key=pk, tenant_id=tenant_id, name="bench-camera", secret_sealed=box.seal(ids.product_secret()),
                node_type=0, data_format=1, description="", auth_type="secret", created_ms=now))
            rows = [{"iot_id": iot, "tenant_id": tenant_id, "product_key": pk, "device_name": dn,
                     "secret_sealed": box.seal(ds), "nickname": "", "status": "UNACTIVE", "enabled": True,
                     "ip_address": "", "firmware_version": "", "time_zone": "UTC", "created_ms": now + i,
                     "active_ms": None, "online_ms": None, "record_life_days": None, "picture_life_days": None}
                    for i, (iot, dn, ds) in enumerate(devs)]
            for i in range(0, len(rows), 1000):
                await conn.execute(insert(devices), rows[i:i + 1000])
        async with sv.db.connect() as conn:
            got = (await conn.execute(select(func.count()).select_from(devices)
                                      .where(devices.c.product_key == pk))).scalar_one()
        assert got == n_devices, (got, n_devices)
    finally:
        await sv.close()
    if database_url:
        await _pg(database_url, "VACUUM ANALYZE")
    return Seed(tenant_id, key_id, secret, pk, devs, time.perf_counter() - t0)


class StatusCounter:
    """Counts device statuses straight from the store (what QueryDevice reads)."""

    def __init__(self, data_dir: Path, database_url: str | None, product_key: str) -> None:
        self.db_path = data_dir / "iotvideo.db"
        self.url = database_url
        self.pk = product_key

    def counts(self, n: int) -> dict[str, int]:
        """Status -> count among devices 0..n-1."""
        last = device_name(n - 1)
        if self.url:
            rows = asyncio.run(_pg(self.url, "SELECT status, count(*) FROM devices WHERE product_key = $1 "
                                             "AND device_name <= $2 GROUP BY status", self.pk, last))
            return {r[0]: int(r[1]) for r in rows}
        import sqlite3

        con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            rows = con.execute("SELECT status, count(*) FROM devices WHERE product_key = ? AND device_name <= ? "
                               "GROUP BY status", (self.pk, last)).fetchall()
        finally:
            con.close()
        return {r[0]: int(r[1]) for r in rows}

    def wait_for(self, n: int, status: str, timeout: float) -> tuple[bool, float, dict[str, int]]:
        """Polls until all n devices have ``status``; (done, seconds, last counts)."""
        t0 = time.perf_counter()
        c: dict[str, int] = {}
        while True:
            c = self.counts(n)
            if c.get(status, 0) == n:
                return True, time.perf_counter() - t0, c
            if time.perf_counter() - t0 > timeout:
                return False, time.perf_counter() - t0, c
            time.sleep(0.05)


# --- signed API calls --------------------------------------------------------------

def invoke_request(host: str, seed: Seed, iot_id: str, identifier: str, args: dict[str, Any]) -> bytes:
    return v1_request(host, seed.key_id, seed.secret, "InvokeThingService",
                      {"IotId": iot_id, "Identifier": identifier, "Args": json.dumps(args, separators=(",", ":"))})


_CLEN = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")
IDLE_MAX_S = 3.0  # below uvicorn's keep-alive timeout (5 s)


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> tuple[int, bytes]:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    m = _CLEN.search(head)
    body = await reader.readexactly(int(m.group(1))) if m else b""
    return int(head[9:12]), body


def exchange(port: int, raw: bytes, timeout: float = 15.0) -> tuple[int, bytes]:
    async def go() -> tuple[int, bytes]:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await asyncio.wait_for(_exchange(r, w, raw), timeout)
        finally:
            w.close()

    return asyncio.run(go())


@dataclass
class Load:
    identifier: str
    planned: int = 0
    ok: int = 0
    http_errors: int = 0  # non-200
    business_errors: int = 0  # 200 with Success:false
    bad_result: int = 0  # sync call whose Result is not the device's data
    socket_errors: int = 0
    timeouts: int = 0
    error_samples: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    achieved_rate: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    p999_ms: float = 0.0
    max_ms: float = 0.0
    mean_ms: float = 0.0
    max_send_lag_ms: float = 0.0
    max_in_flight: int = 0
    connections_opened: int = 0
    connections_expired: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    attempt: int = 1

    @property
    def errors(self) -> int:
        return self.http_errors + self.business_errors + self.bad_result + self.socket_errors + self.timeouts


async def open_loop(port: int, requests: list[bytes], rate: float, identifier: str, sync: bool,
                    timeout: float = 15.0) -> Load:
    """Sends ``requests[i]`` at t0 + i / rate whatever happened to the earlier ones (open
    loop), each on an idle keep-alive connection of a pool (a new one when none is idle).
    Latency: from the moment the call was due to the end of its response."""
    res = Load(identifier, planned=len(requests))
    # Idle keep-alive connections with the time each went idle. uvicorn closes a connection
    # idle for 5 s (its timeout_keep_alive); reusing one at that moment loses the race and
    # reads 0 bytes, which is the client's mistake, not the server's: connections idle for
    # more than IDLE_MAX_S are closed here instead of reused.
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
    lat: list[float] = []
    in_flight = 0
    tasks: set[asyncio.Task[None]] = set()

    def sample(kind: str) -> None:
        kind = kind[:160]
        if kind in res.error_samples or len(res.error_samples) < 12:
            res.error_samples[kind] = res.error_samples.get(kind, 0) + 1

    async def one(raw: bytes, due: float) -> None:
        nonlocal in_flight
        in_flight += 1
        res.max_in_flight = max(res.max_in_flight, in_flight)
        conn = None
        try:
            now = time.perf_counter()
            while idle:
                r, w, since = idle.pop()
                if now - since < IDLE_MAX_S and not r.at_eof():
                    conn = (r, w)
                    break
                w.close()
                res.connections_expired += 1
            if conn is None:
                conn = await asyncio.open_connection("127.0.0.1", port)
                res.connections_opened += 1
            status, body = await asyncio.wait_for(_exchange(conn[0], conn[1], raw), timeout)
            lat.append(time.perf_counter() - due)
            if status != 200:
                res.http_errors += 1
                sample(f"HTTP {status}: {body[:120].decode(errors='replace')}")
            elif b'"Success":true' not in body:
                res.business_errors += 1
                sample(body[:160].decode(errors="replace"))
            elif sync and b"FirmwareVersion" not in body:
                res.bad_result += 1
                sample("no device data in Result: " + body[:120].decode(errors="replace"))
            else:
                res.ok += 1
            idle.append((conn[0], conn[1], time.perf_counter()))
            conn = None
        except asyncio.TimeoutError:
            res.timeouts += 1
            sample(f"client timeout ({timeout:g} s)")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            res.socket_errors += 1
            sample(f"socket: {e!r}")
        finally:
            in_flight -= 1
            if conn is not None:
                conn[1].close()

    t0 = time.perf_counter() + 0.05
    for i, raw in enumerate(requests):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        res.max_send_lag_ms = max(res.max_send_lag_ms, (time.perf_counter() - due) * 1000)
        t = asyncio.ensure_future(one(raw, due))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(list(tasks), timeout=timeout + 5)
    res.seconds = time.perf_counter() - t0
    res.achieved_rate = round(len(lat) / res.seconds, 1) if res.seconds else 0.0
    for _, w, _ in idle:
        w.close()
    lat.sort()

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(len(lat) * p / 100))] * 1000, 3) if lat else 0.0

    res.p50_ms, res.p90_ms, res.p99_ms, res.p999_ms = pct(50), pct(90), pct(99), pct(99.9)
    res.max_ms = round(lat[-1] * 1000, 3) if lat else 0.0
    res.mean_ms = round(sum(lat) / len(lat) * 1000, 3) if lat else 0.0
    res.max_send_lag_ms = round(res.max_send_lag_ms, 3)
    res.seconds = round(res.seconds, 2)
    return res


def run_load(port: int, requests: list[bytes], rate: float, identifier: str, sync: bool) -> Load:
    try:
        import uvloop

        return uvloop.run(open_loop(port, requests, rate, identifier, sync))
    except ImportError:
        return asyncio.run(open_loop(port, requests, rate, identifier, sync))


# --- processes --------------------------------------------------------------------

@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    port: int
    mqtt_port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def log_problems(self) -> list[str]:
        """Lines of the server's log that show an error (it runs at ``warning``)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [ln for ln in lines if re.search(r"Traceback|\bERROR\b|\bCRITICAL\b|exception", ln, re.I)]


def _wait_ready(p: Proc, timeout: float = 90.0) -> None:
    try:
        wait_healthy(p.proc, p.port, p.log_path, timeout)
    except RuntimeError:
        p.stop()
        raise


def start_server(data_dir: Path, database_url: str | None, log_path: Path, traced_dir: Path | None = None) -> Proc:
    """``iotvideo serve`` on free ports; with ``traced_dir``, this file's tracemalloc harness
    around the same app instead (memory profile only)."""
    port, mqtt_port = free_port(), free_port()
    env = {**os.environ, "IOTVIDEO_LOG_LEVEL": "warning", "IOTVIDEO_MQTT_TLS_PORT": str(free_port())}
    if traced_dir is None:
        exe = Path(sys.executable).with_name("iotvideo")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "iotvideo.cli"]
        cmd += ["serve", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--http-port", str(port),
                "--mqtt-port", str(mqtt_port)]
        if database_url:
            cmd += ["--database-url", database_url]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_traced-server", str(traced_dir)]
        env.update({"IOTVIDEO_DATA_DIR": str(data_dir), "IOTVIDEO_HOST": "127.0.0.1",
                    "IOTVIDEO_HTTP_PORT": str(port), "IOTVIDEO_MQTT_PORT": str(mqtt_port)})
        if database_url:
            env["IOTVIDEO_DATABASE_URL"] = database_url
    out = open(log_path, "wb")
    p = Proc(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env), port, mqtt_port, log_path)
    out.close()
    _wait_ready(p)
    return p


def traced_server(snap_dir: str) -> None:
    """Hidden mode (``--_traced-server DIR``): the server's app under tracemalloc; SIGUSR1
    writes a snapshot to DIR/snap-K.bin (K = 0, 1, …) and then DIR/snap-K.done."""
    import tracemalloc

    if not os.environ.get("IOTVIDEO_DATA_DIR") or not os.environ.get("IOTVIDEO_MQTT_PORT"):
        raise SystemExit("--_traced-server is started by the bench itself (it sets IOTVIDEO_DATA_DIR …)")
    tracemalloc.start(12)
    import uvicorn

    from iotvideo.app import create_app
    from iotvideo.config import Settings
    from iotvideo.logs import setup_logging

    counter = {"k": 0}

    def snap(_sig: int, _frame: object) -> None:
        k = counter["k"]
        counter["k"] += 1
        s = tracemalloc.take_snapshot()
        path = Path(snap_dir) / f"snap-{k}.bin"
        s.dump(str(path))
        Path(f"{path}.done").write_text("ok")

    signal.signal(signal.SIGUSR1, snap)
    s = Settings()
    setup_logging(s.log_level)
    uvicorn.run(create_app(s), host=s.host, port=s.http_port, log_config=None, access_log=False,
                loop="auto", http="auto", lifespan="on", timeout_graceful_shutdown=10)


class SimClient:
    """The simulator subprocess (bench/device_sim.py), one JSON line per command/event."""

    def __init__(self, mqtt_port: int, devices_file: Path, log_path: Path) -> None:
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, str(SIM), "--port", str(mqtt_port),
                                      "--devices-file", str(devices_file)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)
        self.q: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        ready = self.wait("ready", 60)
        self.pid = int(ready["pid"])

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.q.put(json.loads(line))
            except ValueError:
                pass
        self.q.put(None)

    def wait(self, ev: str, timeout: float) -> dict[str, Any]:
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise RuntimeError(f"simulator: no {ev!r} within {timeout:g} s")
            try:
                msg = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if msg is None:
                raise RuntimeError(f"simulator exited ({self.proc.poll()}) while waiting for {ev!r}")
            if msg.get("ev") == ev:
                return msg
            if msg.get("ev") == "error":
                raise RuntimeError(f"simulator: {msg.get('error')}")

    def call(self, cmd: dict[str, Any], ev: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()
        return self.wait(ev, timeout)

    def stop(self) -> dict[str, Any] | None:
        bye = None
        if self.proc.poll() is None:
            try:
                bye = self.call({"cmd": "quit"}, "bye", 30)
            except (RuntimeError, OSError, BrokenPipeError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()
        return bye


# --- profiling --------------------------------------------------------------------

class Spy:
    """``py-spy record --format raw --nonblocking`` on a pid until stopped (SIGINT makes it write)."""

    def __init__(self, exe: str, pid: int, out: Path, rate: int = 200) -> None:
        self.out = out
        # --nonblocking: read the stacks without stopping the server (blocking sampling stalls a
        # server with 10,000 connections so much that a connect storm runs at a fraction of its rate)
        self.p = subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
                                   "--nonblocking", "--output", str(out)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.7)

    def stop(self) -> Path | None:
        self.p.send_signal(signal.SIGINT)
        try:
            _, err = self.p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.p.kill()
            _, err = self.p.communicate()
        if not self.out.exists():
            say(f"    py-spy wrote nothing: {err.decode(errors='replace')[-400:]}")
            return None
        return self.out


# Where the CPU goes, by the leaf-most frame that matches (else "event loop C code").
LEAF_CATEGORIES: list[tuple[str, str]] = [
    ("logging", r"\(logging/|\(iotvideo/logs\.py"),
    ("secret box (AES-GCM open)", r"\(iotvideo/secretbox\.py|\(cryptography/"),
    ("MQTT CONNECT auth (auth.py: HMAC, client id)", r"\(iotvideo/devicelink/auth\.py"),
    ("MQTT codec (mqtt/parser.py, packets.py)", r"\(iotvideo/devicelink/mqtt/"),
    ("broker sessions (broker.py)", r"\(iotvideo/devicelink/broker\.py"),
    ("alink + thing model + topic ACL", r"\(iotvideo/devicelink/(alink|tsl|topics_acl)\.py"),
    ("device link (link.py)", r"\(iotvideo/devicelink/"),
    ("API signature (signing.py)", r"\(iotvideo/openapi/signing\.py"),
    ("SQLAlchemy compile + cache key", r"\(sqlalchemy/sql/(compiler|cache_key|traversals)\.py"),
    ("SQLAlchemy statement building", r"\(sqlalchemy/sql/"),
    ("aiosqlite calls (loop side)", r"\(aiosqlite/"),
    ("asyncpg", r"\(asyncpg/"),
    ("SQLAlchemy execute/result/pool", r"\(sqlalchemy/"),
    ("API gateway + handlers + domain", r"\(iotvideo/(openapi|domain|services|bus)"),
    ("uvicorn HTTP", r"\(uvicorn/(protocols|middleware)/|httptools"),
    ("asyncio (Python part)", r"\(asyncio/(?!runners\.py)"),
]
# What work a sample belongs to: the root-most frame whose function matches.
ENTRY_POINTS: list[tuple[str, str]] = [
    ("MQTT connect: authenticate (credentials lookup + password)",
     r"^(\w+\.)?(_auth|authenticate) \(iotvideo/devicelink/(broker|link)\.py|^(\w+\.)?credentials \(iotvideo/domain/device_state"),
    ("device status flush (batched UPDATEs)", r"^(\w+\.)?(_run|flush) \(iotvideo/domain/device_state\.py"),
    ("keep-alive sweeper (every 1 s over all sessions)", r"^(\w+\.)?_sweep_keepalive "),
    ("API request (gateway: InvokeThingService …)", r"\(iotvideo/openapi/gateway\.py|\(uvicorn/protocols/"),
    ("MQTT packets in (data_received)", r"^(\w+\.)?data_received \(iotvideo/devicelink/broker\.py"),
    ("connection setup/teardown (broker)",
     r"^(\w+\.)?(connection_made|connection_lost|_finish|_unregister|close|_connect_timeout) \(iotvideo/devicelink/broker\.py"),
]


def _norm_frame(frame: str) -> str:
    frame = re.sub(r"\([^()]*?/(site-packages|src)/", "(", frame)
    frame = re.sub(r"\(/[^()]*?/lib/python3\.\d+/", "(", frame)
    return frame


def _aiosqlite_idle_frame() -> str:
    """The frame of aiosqlite's worker thread waiting for work (idle, not CPU)."""
    try:
        import aiosqlite.core

        lines = Path(aiosqlite.core.__file__).read_text().splitlines()
        line = next(i for i, ln in enumerate(lines, 1) if "= tx.get()" in ln)
        return f"_connection_worker_thread (aiosqlite/core.py:{line})"
    except (ImportError, OSError, StopIteration):
        return "-"


def categorize(raw: Path) -> dict[str, Any]:
    idle_frame = _aiosqlite_idle_frame()
    main_leaf: dict[str, int] = {}
    main_entry: dict[str, int] = {}
    top_self: dict[str, int] = {}
    worker = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_norm_frame(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        if any("(threading.py:" in f for f in frames):
            # aiosqlite's connection threads: count only samples where they run a query,
            # not those blocked on their work queue (idle) or in thread start-up.
            if frames[-1] != idle_frame and not any(
                    re.search(r"(get|wait|start) \((queue|threading)\.py", f) for f in frames[-2:]):
                worker += n
            continue
        cat = "event loop C code (uvloop: I/O, callbacks)"
        for f in reversed(frames):
            hit = next((c for c, rx in LEAF_CATEGORIES if re.search(rx, f)), None)
            if hit:
                cat = hit
                break
        main_leaf[cat] = main_leaf.get(cat, 0) + n
        entry = "other (event loop, timers)"
        for f in frames:
            hit = next((c for c, rx in ENTRY_POINTS if re.search(rx, f)), None)
            if hit:
                entry = hit
                break
        main_entry[entry] = main_entry.get(entry, 0) + n
        leaf = re.sub(r":\d+\)$", ")", frames[-1])
        top_self[leaf] = top_self.get(leaf, 0) + n
    tot = sum(main_leaf.values()) or 1

    def pct(d: dict[str, int]) -> dict[str, float]:
        return {k: round(100 * v / tot, 1) for k, v in sorted(d.items(), key=lambda kv: -kv[1])}

    return {"main_samples": sum(main_leaf.values()), "aiosqlite_thread_busy_samples": worker,
            "by_category_pct": pct(main_leaf), "by_work_pct": pct(main_entry),
            "top_self_pct": [(k, round(100 * v / tot, 1)) for k, v in
                             sorted(top_self.items(), key=lambda kv: -kv[1])[:12]]}


def memory_breakdown(a_path: Path, b_path: Path, n: int) -> dict[str, Any]:
    """tracemalloc: what grew between the snapshots, per connection, by source line and file."""
    import tracemalloc

    a = tracemalloc.Snapshot.load(str(a_path))
    b = tracemalloc.Snapshot.load(str(b_path))
    flt = [tracemalloc.Filter(False, tracemalloc.__file__)]
    a, b = a.filter_traces(flt), b.filter_traces(flt)
    total = sum(s.size_diff for s in b.compare_to(a, "filename"))

    def short(fn: str) -> str:
        return _norm_frame(f"({fn})")[1:-1]

    by_file = sorted(b.compare_to(a, "filename"), key=lambda s: -s.size_diff)[:10]
    by_tb = b.compare_to(a, "traceback")
    # group by allocating line + the nearest iotvideo frame above it (who asked for it)
    groups: dict[tuple[str, str], list[int]] = {}
    for s in by_tb:
        frames = list(s.traceback)  # oldest first
        leaf = frames[-1]
        via = next((f for f in reversed(frames) if "/iotvideo/" in f.filename and f is not leaf), None)
        key = (f"{short(leaf.filename)}:{leaf.lineno}", f"{short(via.filename)}:{via.lineno}" if via else "")
        g = groups.setdefault(key, [0, 0])
        g[0] += s.size_diff
        g[1] += s.count_diff
    top = sorted(groups.items(), key=lambda kv: -kv[1][0])[:15]
    lines_cache: dict[str, list[str]] = {}

    def src(loc: str) -> str:
        fn, _, ln = loc.rpartition(":")
        if fn == "asyncio/runners.py":
            return "(objects made by uvloop's C code under the loop: transports, handles, received bytes)"
        for base in (ROOT / "src", *[Path(p) for p in sys.path if p.endswith("site-packages")]):
            path = base / fn
            if path.exists():
                if fn not in lines_cache:
                    lines_cache[fn] = path.read_text(errors="replace").splitlines()
                try:
                    return lines_cache[fn][int(ln) - 1].strip()[:90]
                except (IndexError, ValueError):
                    return ""
        return ""

    return {
        "connections": n, "python_heap_growth_bytes": total,
        "python_heap_per_connection_bytes": round(total / n) if n else 0,
        "by_file": [{"file": short(s.traceback[0].filename), "per_connection_bytes": round(s.size_diff / n),
                     "blocks_per_connection": round(s.count_diff / n, 2)} for s in by_file],
        "by_line": [{"line": k[0], "via": k[1], "code": src(k[0]), "per_connection_bytes": round(v[0] / n),
                     "blocks_per_connection": round(v[1] / n, 2)} for k, v in top],
    }


# --- the bench --------------------------------------------------------------------

def _settle_rss(pid: int, seconds: float = 1.5) -> int:
    time.sleep(seconds)
    return rss_kib(pid)


@dataclass
class Ctx:
    a: argparse.Namespace
    tmp: Path
    data_dir: Path
    db_url: str | None
    seed: Seed
    devices_file: Path
    counter: StatusCounter
    failures: list[str] = field(default_factory=list)
    noisy: list[str] = field(default_factory=list)
    last_connect_end: float = 0.0


def build_requests(ctx: Ctx, host: str, n: int, identifier: str, args: dict[str, Any], count: int,
                   rng: random.Random) -> list[bytes]:
    return [invoke_request(host, ctx.seed, ctx.seed.devices[rng.randrange(n)][0], identifier, args)
            for _ in range(count)]


def warm_up(ctx: Ctx, port: int) -> None:
    """A few signed calls before the baseline RSS: imports, statement caches, pools."""
    host = f"127.0.0.1:{port}"
    for i in range(5):
        status, body = exchange(port, invoke_request(host, ctx.seed, ctx.seed.devices[-1 - i][0], "GetDeviceStatus", {}))
        if status != 200 or b'"Code":"466"' not in body:
            # an offline/never-connected device must be refused at once with a 466 error
            raise RuntimeError(f"warm-up call answered {status} {body[:300]!r}")


def run_count(ctx: Ctx, n: int, rng: random.Random) -> dict[str, Any]:
    a = ctx.a
    label = f"N={n:,}"
    say(f"[{label}] fresh iotvideo serve")
    srv = start_server(ctx.data_dir, ctx.db_url, ctx.tmp / f"server-{n}.log")
    sim: SimClient | None = None
    out: dict[str, Any] = {"devices": n}
    try:
        host = f"127.0.0.1:{srv.port}"
        warm_up(ctx, srv.port)
        rss0 = _settle_rss(srv.pid)
        out["rss_idle_mib"] = round(rss0 / 1024, 1)
        sim = SimClient(srv.mqtt_port, ctx.devices_file, ctx.tmp / f"sim-{n}.log")
        sim_rss0 = rss_kib(sim.pid)

        # connect
        out["others_before_connect_pct"] = round(wait_quiet(a.quiet_wait), 1)
        say(f"[{label}] connecting {n:,} devices at {a.connect_rate:g}/s")
        meter = CpuMeter({"server": srv.pid, "sim": sim.pid})
        t0 = time.perf_counter()
        con = sim.call({"cmd": "connect", "n": n, "rate": a.connect_rate, "timeout": 120}, "connected",
                       n / a.connect_rate + 180)
        done, _, counts = ctx.counter.wait_for(n, "ONLINE", 60)
        to_db = time.perf_counter() - t0
        ctx.last_connect_end = time.monotonic()
        out["connect_cpu"] = meter.stop()
        out["connect"] = {k: con[k] for k in ("ok", "failed", "seconds", "connack_p50_ms", "connack_p99_ms",
                                              "connack_max_ms", "refused", "timed_out")}
        out["connect"]["rate_per_s"] = round(con["ok"] / con["seconds"], 1) if con["seconds"] else 0.0
        out["connect"]["all_online_in_db_s"] = round(to_db, 2)
        out["connect"]["db_counts"] = counts
        say(f"    {con['ok']:,} connected in {con['seconds']:.1f} s ({out['connect']['rate_per_s']:,.0f}/s), "
            f"CONNACK p50 {con['connack_p50_ms']:.1f} ms p99 {con['connack_p99_ms']:.1f} ms; all ONLINE in the "
            f"database after {to_db:.1f} s: {done} {counts}; CPU % of a core: server "
            f"{out['connect_cpu']['server_cpu_pct']:.0f}, simulator {out['connect_cpu']['sim_cpu_pct']:.0f}")
        if con["failed"] or con["ok"] != n or con["timed_out"]:
            ctx.failures.append(f"{label}: {con['ok']} of {n} connected ({con['failed']} failed, "
                                f"refused {con['refused']}, timed out {con['timed_out']})")
        if not done:
            ctx.failures.append(f"{label}: not all ONLINE in the database after 60 s: {counts}")

        rss1 = _settle_rss(srv.pid, 3.0)
        out["rss_connected_mib"] = round(rss1 / 1024, 1)
        out["rss_per_connection_kib"] = round((rss1 - rss0) / n, 2)
        out["sim_rss_per_device_kib"] = round((rss_kib(sim.pid) - sim_rss0) / n, 2)
        say(f"    server RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB: {out['rss_per_connection_kib']:.2f} KiB "
            f"per connection")

        # calls
        for identifier, args, sync in (("GetDeviceStatus", {}, True), ("ForceIFrame", {"StreamType": 0}, False)):
            count = int(a.rate * a.duration)
            best: Load | None = None
            sent = 0
            tries: list[dict[str, float]] = []
            for attempt in range(1 + a.noisy_retries):
                sent += count
                reqs = build_requests(ctx, host, n, identifier, args, count, rng)
                bg = wait_quiet(a.quiet_wait)
                say(f"[{label}] InvokeThingService {identifier} ({'sync, RRPC' if sync else 'async'}): {a.rate:g}/s "
                    f"for {a.duration:g} s ({count} calls; others used {bg:.0f} % of a core just before)")
                meter = CpuMeter({"server": srv.pid, "sim": sim.pid})
                ld = run_load(srv.port, reqs, a.rate, identifier, sync)
                ld.cpu = meter.stop()
                ld.attempt = attempt + 1
                tries.append({"p50_ms": ld.p50_ms, "p99_ms": ld.p99_ms, "max_ms": ld.max_ms, "errors": ld.errors,
                              "others_cpu_pct": ld.cpu["other_cpu_pct"]})
                say(f"    -> p50 {ld.p50_ms:.2f} ms  p99 {ld.p99_ms:.2f} ms  max {ld.max_ms:.2f} ms  ok {ld.ok}/"
                    f"{ld.planned}  errors {ld.errors}  (send lag max {ld.max_send_lag_ms:.1f} ms; CPU % of a "
                    f"core: server {ld.cpu['server_cpu_pct']:.0f}, sim {ld.cpu['sim_cpu_pct']:.0f}, loadgen "
                    f"{ld.cpu['loadgen_cpu_pct']:.0f}, others {ld.cpu['other_cpu_pct']:.0f})")
                if ld.errors:
                    say(f"    errors: {ld.error_samples}")
                    ctx.failures.append(f"{label} {identifier}: {ld.errors} errors {ld.error_samples}")
                if best is None or ld.cpu["other_cpu_pct"] < best.cpu["other_cpu_pct"]:
                    best = ld
                if ld.cpu["other_cpu_pct"] <= NOISY_PCT:
                    break
                if attempt < a.noisy_retries:
                    say(f"    noisy: others used {ld.cpu['other_cpu_pct']:.0f} % of a core meanwhile: again, "
                        "keeping the quietest run")
            assert best is not None
            if best.cpu["other_cpu_pct"] > NOISY_PCT:
                ctx.noisy.append(f"{label} {identifier}")
            key = "sync" if sync else "async"
            out[key] = dict(best.__dict__)
            out[key]["errors"] = best.errors
            out[key]["noisy"] = best.cpu["other_cpu_pct"] > NOISY_PCT
            out[key]["attempt_calls"] = sent
            out[key]["all_attempts"] = tries
        out["rss_after_calls_mib"] = round(rss_kib(srv.pid) / 1024, 1)
        st = sim.call({"cmd": "stats"}, "stats", 30)
        out["sim_counters"] = st["counters"]
        c = st["counters"]
        if c.get("svc_GetDeviceStatus", 0) != out["sync"]["attempt_calls"] or \
                c.get("svc_ForceIFrame", 0) != out["async"]["attempt_calls"]:
            ctx.failures.append(f"{label}: devices answered {st['counters'].get('svc_GetDeviceStatus', 0)} "
                                f"GetDeviceStatus and {st['counters'].get('svc_ForceIFrame', 0)} ForceIFrame, "
                                f"{out['sync']['attempt_calls']} and {out['async']['attempt_calls']} expected")

        prof: dict[str, Any] | None = None
        if a.profile and n == max(a.count_list):
            prof = profile_phase(ctx, srv, sim, n, rng)

        # disconnect
        say(f"[{label}] disconnecting all")
        t0 = time.perf_counter()
        dis = sim.call({"cmd": "disconnect", "rate": a.disconnect_rate, "timeout": 60}, "disconnected", 180)
        done_off, _, counts = ctx.counter.wait_for(n, "OFFLINE", 60)
        out["disconnect"] = {"seconds": dis["seconds"], "all_offline_in_db_s": round(time.perf_counter() - t0, 2),
                             "db_counts": counts}
        out["rss_after_disconnect_mib"] = round(_settle_rss(srv.pid) / 1024, 1)
        say(f"    {dis['n']:,} closed in {dis['seconds']:.1f} s; all OFFLINE in the database after "
            f"{out['disconnect']['all_offline_in_db_s']:.1f} s: {done_off} {counts}; server RSS now "
            f"{out['rss_after_disconnect_mib']} MiB")
        if not done_off:
            ctx.failures.append(f"{label}: not all OFFLINE in the database after 60 s: {counts}")
        bye = sim.stop()
        sim = None
        if bye:
            c = bye.get("counters", {})
            out["sim_counters"] = c
            lost = c.get("lost", 0) + c.get("lost_before_connack", 0) + c.get("protocol_errors", 0)
            out["connections_lost"] = lost
            if lost or c.get("bad_downlink") or c.get("other_downlink"):
                ctx.failures.append(f"{label}: simulator saw {c} notes {bye.get('notes')}")
        if prof is not None:
            out["profile"] = prof
    finally:
        if sim is not None:
            sim.stop()
        srv.stop()
    problems = srv.log_problems()
    out["server_log_errors"] = len(problems)
    if problems:
        ctx.failures.append(f"{label}: server logged {len(problems)} error lines, first: {problems[:3]}")
        say(f"    server log errors: {problems[:5]}")
    return out


def profile_phase(ctx: Ctx, srv: Proc, sim: SimClient, n: int, rng: random.Random) -> dict[str, Any]:
    """py-spy on the server: idle with n connections, the sync-call load, then a connect storm."""
    a = ctx.a
    spy = ensure_py_spy()
    if not spy:
        say("    py-spy not available: no CPU profile")
        return {}
    host = f"127.0.0.1:{srv.port}"
    prof: dict[str, Any] = {}
    keep = Path(a.keep_profiles) if a.keep_profiles else None

    def done(name: str, path: Path | None, extra: dict[str, Any]) -> None:
        if path is None:
            return
        if keep:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, keep / path.name)
        c = categorize(path)
        c.update(extra)
        prof[name] = c
        say(f"    profile {name}: {c['main_samples']} samples of the event-loop thread ({extra})")
        for k, v in list(c["by_work_pct"].items())[:6]:
            say(f"      {v:5.1f} %  {k}")
        for k, v in list(c["by_category_pct"].items())[:8]:
            say(f"      {v:5.1f} %  [{k}]")

    # 1. idle, n connected
    say(f"[profile] py-spy: {n:,} idle connections, {a.profile_seconds:g} s")
    meter = CpuMeter({"server": srv.pid})
    s = Spy(spy, srv.pid, ctx.tmp / "profile-idle.txt")
    time.sleep(a.profile_seconds)
    cpu = meter.stop()
    done("idle", s.stop(), {"server_cpu_pct": cpu["server_cpu_pct"], "seconds": a.profile_seconds})

    # 2. sync calls
    say(f"[profile] py-spy: GetDeviceStatus at {a.rate:g}/s for {a.profile_seconds:g} s")
    reqs = build_requests(ctx, host, n, "GetDeviceStatus", {}, int(a.rate * a.profile_seconds), rng)
    meter = CpuMeter({"server": srv.pid})
    s = Spy(spy, srv.pid, ctx.tmp / "profile-sync-calls.txt")
    ld = run_load(srv.port, reqs, a.rate, "GetDeviceStatus", True)
    cpu = meter.stop()
    done("sync_calls", s.stop(), {"server_cpu_pct": cpu["server_cpu_pct"], "p50_ms": ld.p50_ms,
                                  "p99_ms": ld.p99_ms, "errors": ld.errors, "note": "latency under py-spy"})

    # 3. connect storms: all off, then all on again under py-spy, offered faster than the
    #    server can take them, so the achieved rate is its connect capacity (under py-spy).
    #    First with the server's credential cache expired (as after an outage or a restart),
    #    then at once again (every lookup a cache hit).
    try:
        from iotvideo.domain.device_state import DeviceState

        cache_s = float(getattr(DeviceState, "CREDENTIAL_CACHE_S", 30.0))
    except Exception:  # noqa: BLE001 - only decides how long to wait
        cache_s = 30.0
    sim.call({"cmd": "disconnect", "rate": a.disconnect_rate, "timeout": 60}, "disconnected", 180)
    ctx.counter.wait_for(n, "OFFLINE", 60)
    wait = ctx.last_connect_end + cache_s + 1.0 - time.monotonic()
    if wait > 0:
        say(f"    waiting {wait:.0f} s for the server's credential cache ({cache_s:g} s) to expire")
        time.sleep(wait)
    for name, what in (("connect_storm", "credential cache expired"), ("connect_storm_cached", "credentials cached")):
        say(f"[profile] py-spy: reconnect of {n:,} devices offered at {a.storm_rate:g}/s ({what})")
        st0 = sim.call({"cmd": "stats"}, "stats", 30)["counters"]
        meter = CpuMeter({"server": srv.pid, "sim": sim.pid})
        s = Spy(spy, srv.pid, ctx.tmp / f"profile-{name}.txt")
        con = sim.call({"cmd": "connect", "n": n, "rate": a.storm_rate, "timeout": 120}, "connected",
                       n / a.storm_rate + 180)
        ok, _, _ = ctx.counter.wait_for(n, "ONLINE", 60)
        cpu = meter.stop()
        st1 = sim.call({"cmd": "stats"}, "stats", 30)
        sim_diff = {k: v - st0.get(k, 0) for k, v in st1["counters"].items()
                    if v != st0.get(k, 0) and k not in ("pings",)}
        done(name, s.stop(), {"what": what, "server_cpu_pct": cpu["server_cpu_pct"],
                              "sim_cpu_pct": cpu.get("sim_cpu_pct"), "offered_rate": a.storm_rate,
                              "connected": con["ok"], "failed": con["failed"], "seconds": con["seconds"],
                              "achieved_rate": round(con["ok"] / con["seconds"], 1) if con["seconds"] else 0,
                              "connack_p50_ms": con["connack_p50_ms"], "connack_p99_ms": con["connack_p99_ms"],
                              "connack_max_ms": con["connack_max_ms"], "sim_counters": sim_diff,
                              "sim_notes": st1["notes"][-3:] if con["failed"] else []})
        if con["ok"] != n or not ok:
            ctx.failures.append(f"profile {name}: {con['ok']} of {n} connected (offered at {a.storm_rate:g}/s), "
                                f"all ONLINE: {ok}; simulator: {sim_diff} {st1['notes'][-3:]}")
        if name == "connect_storm":
            sim.call({"cmd": "disconnect", "rate": a.disconnect_rate, "timeout": 60}, "disconnected", 180)
            ctx.counter.wait_for(n, "OFFLINE", 60)
            time.sleep(1.0)
    return prof


def memory_phase(ctx: Ctx, n: int) -> dict[str, Any]:
    """The same app under tracemalloc: which lines hold a connection's Python memory."""
    a = ctx.a
    snap_dir = ctx.tmp / "snaps"
    snap_dir.mkdir(exist_ok=True)
    say(f"[memory] tracemalloc server, {n:,} connections")
    srv = start_server(ctx.data_dir, ctx.db_url, ctx.tmp / "server-traced.log", traced_dir=snap_dir)
    sim = None

    def snapshot(k: int) -> Path:
        path = snap_dir / f"snap-{k}.bin"
        os.kill(srv.pid, signal.SIGUSR1)
        deadline = time.time() + 120
        while not Path(f"{path}.done").exists():
            if time.time() > deadline:
                raise RuntimeError("tracemalloc snapshot not written in 120 s")
            time.sleep(0.2)
        return path

    try:
        warm_up(ctx, srv.port)
        time.sleep(1.0)
        s0 = snapshot(0)
        r0 = rss_kib(srv.pid)
        sim = SimClient(srv.mqtt_port, ctx.devices_file, ctx.tmp / "sim-traced.log")
        rate = a.memory_connect_rate
        say(f"    connecting {n:,} devices at {rate:g}/s (tracemalloc slows the server several times)")
        con = sim.call({"cmd": "connect", "n": n, "rate": rate, "timeout": 120}, "connected", n / rate + 240)
        ok, _, counts = ctx.counter.wait_for(n, "ONLINE", 90)
        st = sim.call({"cmd": "stats"}, "stats", 30)
        if con["ok"] != n or not ok:
            say(f"    under tracemalloc {con['ok']:,} of {n:,} connected; refused {con['refused']}, database "
                f"{counts}; simulator: {st['counters']} {st['notes'][:5]}")
        time.sleep(2.0)
        s1 = snapshot(1)
        r1 = rss_kib(srv.pid)
        sim.call({"cmd": "disconnect", "rate": a.disconnect_rate, "timeout": 60}, "disconnected", 180)
        ctx.counter.wait_for(n, "OFFLINE", 60)
        mem = memory_breakdown(s0, s1, con["ok"] or n)
        mem["rss_per_connection_kib_under_tracemalloc"] = round((r1 - r0) / max(1, con["ok"]), 2)
        mem["all_online"] = ok
        mem["connect"] = {k: con[k] for k in ("ok", "failed", "seconds", "connack_p99_ms", "refused", "timed_out")}
        mem["connect"]["rate"] = rate
        mem["sim_counters"] = st["counters"]
        mem["sim_notes"] = st["notes"][:5]
        say(f"    Python heap +{mem['python_heap_per_connection_bytes']:,} B per connection "
            f"(RSS +{mem['rss_per_connection_kib_under_tracemalloc']:.2f} KiB, tracemalloc's own traces included)")
        for row in mem["by_line"][:10]:
            say(f"      {row['per_connection_bytes']:6,} B  {row['blocks_per_connection']:5.2f} blocks  {row['line']}"
                f"  via {row['via']}  | {row['code']}")
        return mem
    finally:
        if sim is not None:
            sim.stop()
        srv.stop()


# --- report -----------------------------------------------------------------------

def fmt_table(results: list[dict[str, Any]]) -> str:
    head = (f"{'devices':>8} {'connect s':>9} {'conn/s':>7} {'ONLINE s':>8} {'RSS idle':>9} {'RSS conn':>9} "
            f"{'KiB/conn':>8} | {'sync p50':>8} {'p99':>7} {'max':>7} {'err':>4} | {'async p50':>9} {'p99':>7} "
            f"{'max':>7} {'err':>4} | {'OFFLINE s':>9} {'srv CPU':>7}")
    lines = [head, "-" * len(head)]
    for r in results:
        c, s, y = r["connect"], r["sync"], r["async"]
        lines.append(
            f"{r['devices']:8,} {c['seconds']:9.1f} {c['rate_per_s']:7,.0f} {c['all_online_in_db_s']:8.1f} "
            f"{r['rss_idle_mib']:8.1f}M {r['rss_connected_mib']:8.1f}M {r['rss_per_connection_kib']:8.2f} | "
            f"{s['p50_ms']:8.2f} {s['p99_ms']:7.2f} {s['max_ms']:7.2f} {s['errors']:4d} | {y['p50_ms']:9.2f} "
            f"{y['p99_ms']:7.2f} {y['max_ms']:7.2f} {y['errors']:4d} | {r['disconnect']['all_offline_in_db_s']:9.1f} "
            f"{s['cpu'].get('server_cpu_pct', 0):6.0f}%")
    return "\n".join(lines)


def md_tables(j: dict[str, Any]) -> list[str]:
    cfg = j["config"]
    out = ["| devices | connected | connect time | connects/s | CONNACK p99 | all ONLINE in DB | server RSS idle → connected | RSS per connection | all OFFLINE in DB | server CPU while connecting |",
           "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in j["results"]:
        c = r["connect"]
        out.append(f"| {r['devices']:,} | {c['ok']:,} | {c['seconds']:.1f} s | {c['rate_per_s']:,.0f} | "
                   f"{c['connack_p99_ms']:.1f} ms | {c['all_online_in_db_s']:.1f} s | {r['rss_idle_mib']:.0f} → "
                   f"{r['rss_connected_mib']:.0f} MiB | **{r['rss_per_connection_kib']:.1f} KiB** | "
                   f"{r['disconnect']['all_offline_in_db_s']:.1f} s | {r['connect_cpu']['server_cpu_pct']:.0f} % |")
    out += ["", f"`InvokeThingService` at {cfg['rate']:g} calls/s for {cfg['duration_s']:g} s each, open loop, "
            "random device among those connected; latency from when the call was due to the end of the HTTP response:",
            "",
            "| devices | service | calls | p50 | p90 | p99 | p99.9 | max | errors | server CPU | simulator CPU | others' CPU |",
            "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in j["results"]:
        for key, name in (("sync", "GetDeviceStatus (sync, RRPC)"), ("async", "ForceIFrame (async)")):
            s = r[key]
            p99 = f"**{s['p99_ms']:.2f} ms**" if key == "sync" else f"{s['p99_ms']:.2f} ms"
            out.append(f"| {r['devices']:,} | {name} | {s['ok']:,}/{s['planned']:,} | {s['p50_ms']:.2f} ms | "
                       f"{s['p90_ms']:.2f} ms | {p99} | {s['p999_ms']:.2f} ms | {s['max_ms']:.2f} ms | {s['errors']} | "
                       f"{s['cpu'].get('server_cpu_pct', 0):.0f} % | {s['cpu'].get('sim_cpu_pct', 0):.0f} % | "
                       f"{s['cpu'].get('other_cpu_pct', 0):.0f} % |")
    return out


def docs_block(j: dict[str, Any]) -> str:
    m, cfg = j["machine"], j["config"]
    db = "PostgreSQL " + m.get("postgresql", "") if cfg["backend"] == "postgres" else "SQLite"
    out = [
        f"Measured {j['measured_utc']} with `{cfg['command']}`"
        + (f" on commit {m['tree']}." if m.get("tree", "-") != "-" else "."),
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB; Linux {m['kernel']}; Python {m['python']}, "
        f"uvicorn {m['uvicorn']}, uvloop {m['uvloop']}, SQLAlchemy {m['sqlalchemy']}, {db}. The server, the "
        "simulator (bench/device_sim.py, one process) and the HTTP load generator share the 2 cores.",
        "",
        f"Each N on a fresh `iotvideo serve` (log level `warning`), {cfg['seeded_devices']:,} devices seeded; N "
        f"simulated devices connect at {cfg['connect_rate']:g}/s with their real secrets (hmacsha256, keep-alive "
        "300 s) and answer every call. RSS per connection = (server RSS with N connected − RSS after warm-up) / N.",
        "",
        *md_tables(j),
        "",
    ]
    g = j["goal"]
    out.append(f"**Goal** ({GOAL_DEVICES:,} devices on one node, sync-call p99 < {GOAL_P99_MS:g} ms at "
               f"{cfg['rate']:g} calls/s): " + ("**met**" if g["met"] else "**not met**") +
               (f" — p99 {g['p99_ms']:.2f} ms with {g['devices']:,} connected." if g.get("p99_ms") is not None else
                " (no run at 10,000)."))
    prof = j.get("profile") or {}
    if prof:
        out += ["", f"**CPU profile** at {prof.get('devices', 0):,} connections (py-spy, 200 Hz, event-loop thread; "
                "% of its samples; *work* = the root-most matching frame, *code* = the leaf-most):", ""]
        phases = [p for p in ("idle", "sync_calls") if p in prof]
        titles = {"idle": f"{prof.get('devices', 0):,} idle connections",
                  "sync_calls": f"GetDeviceStatus {cfg['rate']:g}/s"}

        def ms(v: float) -> str:
            return f"{v / 1000:.1f} s" if v >= 1000 else f"{v:.0f} ms"

        for key in ("connect_storm", "connect_storm_cached"):
            cs = prof.get(key)
            if cs:
                phases.append(key)
                titles[key] = (f"reconnect of {cs.get('connected', 0):,} devices offered at {cs.get('offered_rate', 0):g}/s, "
                               f"{cs.get('what', '')}: **{cs.get('achieved_rate', 0):,.0f} connects/s** achieved, "
                               f"CONNACK p50 {ms(cs.get('connack_p50_ms', 0))}, p99 {ms(cs.get('connack_p99_ms', 0))}")
        out.append("| phase | server CPU | samples | work | code |")
        out.append("|---|--:|--:|---|---|")
        for p in phases:
            c = prof[p]
            work = "<br>".join(f"{v:.0f} % {k}" for k, v in list(c["by_work_pct"].items())[:5])
            code = "<br>".join(f"{v:.0f} % {k}" for k, v in list(c["by_category_pct"].items())[:6])
            out.append(f"| {titles[p]} | {c.get('server_cpu_pct', 0):.0f} % | {c['main_samples']} | {work} | {code} |")
    mem = j.get("memory") or {}
    if mem:
        out += ["", f"**Memory profile** (the same app under tracemalloc, {mem['connections']:,} connections): the Python heap grows by "
                f"{mem['python_heap_per_connection_bytes']:,} B per connection; the rest of the RSS per connection "
                "is C memory (uvloop/libuv transports and buffers, allocator overhead). Largest allocation sites:", "",
                "| bytes / connection | blocks | allocated at | on behalf of | code |", "|--:|--:|---|---|---|"]
        for row in mem["by_line"][:10]:
            code = row["code"].replace("|", "\\|")
            via = f"`{row['via']}`" if row["via"] else "–"
            out.append(f"| {row['per_connection_bytes']:,} | {row['blocks_per_connection']:.2f} | `{row['line']}` | "
                       f"{via} | `{code}` |")
    if j.get("noisy"):
        out += ["", "Noisy phases (other processes used more than 25 % of a core meanwhile; trust them less): "
                + ", ".join(j["noisy"]) + "."]
    if j.get("failures"):
        out += ["", "Failures: " + "; ".join(str(f)[:300] for f in j["failures"])]
    return "\n".join(out)


def write_docs(text: str) -> None:
    """Replaces only our generated part (or our section) of docs/benchmarks.md."""
    gen = f"{GEN_BEGIN}\n{text.rstrip()}\n{GEN_END}"
    cur = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    if MARK_BEGIN in cur and MARK_END in cur:
        pre, rest = cur.split(MARK_BEGIN, 1)
        inner, post = rest.split(MARK_END, 1)
        if GEN_BEGIN in inner and GEN_END in inner:
            a, b = inner.split(GEN_BEGIN, 1)
            _, c = b.split(GEN_END, 1)
            inner = a + gen + c
        else:
            inner = "\n" + gen + "\n"
        DOCS.write_text(pre + MARK_BEGIN + inner + MARK_END + post)
        return
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(cur.rstrip() + f"\n\n{SECTION_TITLE}\n\n{MARK_BEGIN}\n{gen}\n{MARK_END}\n")


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 s of calls per service instead of 20 s")
    ap.add_argument("--counts", default="1000,5000,10000", help="connected devices per run [1000,5000,10000]")
    ap.add_argument("--devices", type=int, default=10_000, help="devices seeded [10000, at least max(counts)]")
    ap.add_argument("--database-url", default=None,
                    help="PostgreSQL server (URL of an existing database, e.g. postgresql://postgres@127.0.0.1/"
                         "postgres) to create and drop a fresh bench database on; default: SQLite in a temp dir")
    ap.add_argument("--rate", type=float, default=100.0, help="InvokeThingService calls per second [100]")
    ap.add_argument("--duration", type=float, default=None, help="seconds of calls per service [20, --quick 5]")
    ap.add_argument("--connect-rate", type=float, default=500.0, help="device connects per second [500]")
    ap.add_argument("--disconnect-rate", type=float, default=2000.0, help="device disconnects per second [2000]")
    ap.add_argument("--no-profile", dest="profile", action="store_false",
                    help="skip the py-spy profile at the largest count")
    ap.add_argument("--no-memory-profile", dest="memory_profile", action="store_false",
                    help="skip the tracemalloc run at the largest count")
    ap.add_argument("--storm-rate", type=float, default=3000.0,
                    help="offered connects per second for the profiled reconnect storm [3000]")
    ap.add_argument("--memory-connect-rate", type=float, default=100.0,
                    help="device connects per second for the tracemalloc run [100]")
    ap.add_argument("--profile-seconds", type=float, default=None, help="seconds per profiled phase [10, --quick 4]")
    ap.add_argument("--keep-profiles", metavar="DIR", help="copy py-spy's raw (collapsed) stacks to DIR")
    ap.add_argument("--quiet-wait", type=float, default=None,
                    help="before each phase, wait up to this many seconds for other processes to go quiet [30, --quick 0]")
    ap.add_argument("--noisy-retries", type=int, default=None,
                    help="repeat a call phase this many times while others use > 25 %% of a core [2, --quick 0]")
    ap.add_argument("--seed", type=int, default=1, help="random seed for the choice of devices [1]")
    ap.add_argument("--write-docs", action="store_true", help=f"write the results into {DOCS.relative_to(ROOT)}")
    ap.add_argument("--docs-from", metavar="FILE", help="only write the docs from the JSON line of an earlier run")
    ap.add_argument("--_traced-server", dest="traced_server", help=argparse.SUPPRESS)
    a = ap.parse_args()
    # Started in the background by a non-interactive shell, SIGINT is ignored: let SIGTERM
    # and SIGINT both unwind through the finally blocks (servers stopped, temp dir removed).
    if a.traced_server:
        traced_server(a.traced_server)
        return 0
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)
    if a.docs_from:
        line = next(ln for ln in reversed(Path(a.docs_from).read_text().splitlines())
                    if ln.startswith('{"bench":"devices"'))
        write_docs(docs_block(json.loads(line)))
        print(f"wrote {DOCS.relative_to(ROOT)}")
        return 0
    a.duration = a.duration or (5.0 if a.quick else 20.0)
    a.profile_seconds = a.profile_seconds or (4.0 if a.quick else 10.0)
    a.quiet_wait = (0.0 if a.quick else 30.0) if a.quiet_wait is None else a.quiet_wait
    a.noisy_retries = (0 if a.quick else 2) if a.noisy_retries is None else a.noisy_retries
    a.count_list = sorted({int(x) for x in a.counts.split(",") if x.strip()})
    if not a.count_list or a.count_list[0] < 1:
        ap.error("--counts: positive integers")
    a.devices = max(a.devices, a.count_list[-1])
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if a.count_list[-1] + 100 > hard:
        say(f"warning: the open-files limit ({hard}) is below {a.count_list[-1]} connections + margin")

    machine = machine_info()
    cmd = "bench/devices.py" + (" --quick" if a.quick else "") + \
          ("" if a.counts == "1000,5000,10000" else f" --counts {a.counts}")
    cfg: dict[str, Any] = {
        "command": f".venv/bin/python {cmd}", "counts": a.count_list, "seeded_devices": a.devices,
        "rate": a.rate, "duration_s": a.duration, "connect_rate": a.connect_rate,
        "disconnect_rate": a.disconnect_rate, "keepalive_s": 300, "signmethod": "hmacsha256",
        "backend": "postgres" if a.database_url else "sqlite", "log_level": "warning",
    }
    tmp = Path(tempfile.mkdtemp(prefix="iotvideo-devbench-"))
    pg_name = None
    results: list[dict[str, Any]] = []
    ctx: Ctx | None = None
    memory: dict[str, Any] = {}
    try:
        db_url = None
        if a.database_url:
            ver = asyncio.run(_pg(a.database_url, "SHOW server_version"))[0][0]
            machine["postgresql"] = str(ver)
            pg_name = "iotvideo_devbench_" + secrets.token_hex(4)
            asyncio.run(_pg(a.database_url, f'CREATE DATABASE "{pg_name}"'))
            db_url = pg_db_url(a.database_url, pg_name)
        say("machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()))
        data_dir = tmp / "data"
        say(f"seeding 1 tenant, 1 AccessKey, 1 product, {a.devices:,} devices ({cfg['backend']})")
        seed = asyncio.run(_seed(data_dir, db_url, a.devices))
        say(f"    seeded in {seed.seconds:.1f} s")
        devices_file = tmp / "devices.json"
        fd = os.open(devices_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"product_key": seed.product_key, "devices": [[dn, ds] for _, dn, ds in seed.devices]}, f)
        ctx = Ctx(a, tmp, data_dir, db_url, seed, devices_file, StatusCounter(data_dir, db_url, seed.product_key))
        rng = random.Random(a.seed)
        for n in a.count_list:
            results.append(run_count(ctx, n, rng))
        if a.memory_profile:
            try:
                memory = memory_phase(ctx, a.count_list[-1])
            except Exception as e:  # noqa: BLE001 - the profile is extra; the figures stand without it
                say(f"memory profile failed: {e!r}")
                ctx.failures.append(f"memory profile failed: {e!r}")
    finally:
        if pg_name and a.database_url:
            try:
                asyncio.run(_pg(a.database_url, f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))
            except Exception as e:  # noqa: BLE001
                say(f"could not drop database {pg_name}: {e}")
        shutil.rmtree(tmp, ignore_errors=True)

    failures = ctx.failures if ctx else []
    goal_row = next((r for r in results if r["devices"] >= GOAL_DEVICES), None)
    goal = {"devices": GOAL_DEVICES, "p99_limit_ms": GOAL_P99_MS, "met": False, "p99_ms": None}
    if goal_row:
        s = goal_row["sync"]
        goal.update(devices=goal_row["devices"], p99_ms=s["p99_ms"],
                    met=goal_row["connect"]["ok"] >= GOAL_DEVICES and s["errors"] == 0 and s["p99_ms"] < GOAL_P99_MS)
    profile = next((dict(r["profile"], devices=r["devices"]) for r in results if r.get("profile")), {})
    for r in results:
        r.pop("profile", None)

    print()
    print(f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['mem_gib']} GiB, Linux {machine['kernel']}, "
          f"Python {machine['python']}, uvloop {machine['uvloop']}, SQLAlchemy {machine['sqlalchemy']}"
          + (f", PostgreSQL {machine['postgresql']}" if "postgresql" in machine else ", SQLite"))
    print(f"Devices connect at {a.connect_rate:g}/s (hmacsha256, keep-alive 300 s); InvokeThingService open loop at "
          f"{a.rate:g}/s for {a.duration:g} s per service; a fresh server per N")
    print()
    print(fmt_table(results))
    print()
    print(f"Goal: {GOAL_DEVICES:,} devices on one node with sync-call p99 < {GOAL_P99_MS:g} ms: "
          + ("MET" if goal["met"] else "NOT MET") + (f" (p99 {goal['p99_ms']:.2f} ms)" if goal["p99_ms"] is not None else ""))
    if ctx and ctx.noisy:
        print("NOISY (other processes used > 25 % of a core during the run): " + ", ".join(ctx.noisy))
    if failures:
        print("FAILURES: " + "; ".join(str(f)[:500] for f in failures))
    summary = {"bench": "devices", "measured_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "machine": machine, "config": cfg, "results": results, "goal": goal, "profile": profile,
               "memory": memory, "noisy": ctx.noisy if ctx else [], "ok": not failures, "failures": failures}
    if a.write_docs:
        write_docs(docs_block(summary))
        print(f"wrote {DOCS.relative_to(ROOT)}")
    print(json.dumps(summary, separators=(",", ":"), default=str))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
