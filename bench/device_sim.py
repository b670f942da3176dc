"""Simulated cameras for bench/devices.py: many lean MQTT device connections in ONE process.

Not a stand-alone tool: bench/devices.py starts it as a subprocess and drives it with
one JSON command per line on stdin; it answers one JSON event per line on stdout (logs
go to stderr). Commands::

    {"cmd": "connect", "n": 10000, "rate": 500}   -> {"ev": "connected", ...}  (devices 0..n-1)
    {"cmd": "disconnect", "rate": 2000}            -> {"ev": "disconnected", ...}
    {"cmd": "stats"}                               -> {"ev": "stats", ...}
    {"cmd": "quit"}                                -> {"ev": "bye", ...}, then exits

Every device is an ``asyncio.Protocol`` on the project's sans-IO MQTT codec
(``iotvideo.devicelink.mqtt``): no task per device, no polling. A device:

* connects as the official SDK does (client id ``{pk}&{dn}|securemode=3,signmethod=
  hmacsha256,timestamp=…|``, username ``{dn}&{pk}``, HMAC-SHA256 password with its real
  secret), keep-alive 300 s (one sweeper for all devices sends PINGREQ when a device has
  been silent for half of it);
* answers service calls with ``alink``'s device-side builders: RRPC requests
  (``/ext/rrpc/{id}/sys/{pk}/{dn}/thing/service/{x}``) on the same topic, async calls
  (``/sys/{pk}/{dn}/thing/service/{x}``) on ``{x}_reply``; ``GetDeviceStatus`` with
  its outputs, any other service with code 200 and ``{}``; property sets with 200.

Connections are opened at a bounded rate (``rate`` per second, in 10 ms slices); each
attempt is retried up to twice on a refused/failed TCP connect, never on a CONNACK
refusal. ``lost`` counts connections the server closed that we did not ask to close:
after the connect phase it should stay 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from iotvideo.devicelink import alink  # noqa: E402
from iotvideo.devicelink.auth import expected_password  # noqa: E402
from iotvideo.devicelink.mqtt import (  # noqa: E402
    ConnAck,
    Connect,
    Disconnect,
    MqttProtocolError,
    PacketReader,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    encode,
)

KEEPALIVE = 300
PINGREQ = encode(PingReq())
DISCONNECT = encode(Disconnect())
# Device states
IDLE, CONNECTING, UP, CLOSING = 0, 1, 2, 3


def log(*a: object) -> None:
    print("device_sim:", *a, file=sys.stderr, flush=True)


def rss_kib(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Device(asyncio.Protocol):
    __slots__ = ("sim", "idx", "dn", "secret", "transport", "reader", "state", "last_tx", "t_start", "ours")

    def __init__(self, sim: "Sim", idx: int, dn: str, secret: str) -> None:
        self.sim = sim
        self.idx = idx
        self.dn = dn
        self.secret = secret
        self.transport: asyncio.Transport | None = None
        self.reader: PacketReader | None = None
        self.state = IDLE
        self.last_tx = 0.0
        self.t_start = 0.0
        self.ours = False  # True once we decided to close it

    # --- asyncio.Protocol ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.reader = PacketReader(role="client")
        self.ours = False
        self._write(self.sim.connect_packet(self))

    def data_received(self, data: bytes) -> None:
        assert self.reader is not None
        try:
            packets = self.reader.feed(data)
        except MqttProtocolError as e:
            self.sim.count("protocol_errors")
            self.sim.note(f"{self.dn}: protocol error from the server: {e.reason}")
            self.close()
            return
        for p in packets:
            t = type(p)
            if t is Publish:
                self.sim.on_publish(self, p)  # type: ignore[arg-type]
            elif t is ConnAck:
                self.sim.on_connack(self, p)  # type: ignore[arg-type]
            elif t is PingResp or t is PubAck:
                pass
            else:
                self.sim.count("unexpected_packets")

    def connection_lost(self, exc: Exception | None) -> None:
        self.sim.on_lost(self, exc)
        self.transport = None
        self.reader = None

    # --- helpers ---
    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
            self.last_tx = self.sim.now

    def close(self) -> None:
        self.ours = True
        if self.transport is not None:
            self.transport.close()


class Sim:
    def __init__(self, host: str, port: int, product_key: str, devices: list[tuple[str, str]]) -> None:
        self.host = host
        self.port = port
        self.pk = product_key
        self.devices = [Device(self, i, dn, secret) for i, (dn, secret) in enumerate(devices)]
        self.loop = asyncio.get_running_loop()
        self.now = time.monotonic()
        self.counters: dict[str, int] = {}
        self.notes: list[str] = []
        self.refused: dict[str, int] = {}
        self.connected = 0
        self._phase: dict[str, Any] | None = None
        self._phase_done: asyncio.Future[None] | None = None
        self._started = time.monotonic()
        self.connect_latencies_ms: list[float] = []

    # --- counters / notes ---
    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    def note(self, text: str) -> None:
        """Keeps the 20 most recent problem notes."""
        self.notes.append(text)
        if len(self.notes) > 20:
            del self.notes[0]

    # --- device protocol ---
    def connect_packet(self, d: Device) -> bytes:
        ts = str(int(time.time() * 1000))
        cid = f"{self.pk}&{d.dn}"
        pw = expected_password(d.secret, cid, self.pk, d.dn, ts, "hmacsha256")
        return encode(Connect(client_id=f"{cid}|securemode=3,signmethod=hmacsha256,timestamp={ts}|",
                              username=f"{d.dn}&{self.pk}", password=pw.encode(), keepalive=KEEPALIVE,
                              clean_session=True))

    def on_connack(self, d: Device, p: ConnAck) -> None:
        if p.return_code != 0:
            self.refused[str(p.return_code)] = self.refused.get(str(p.return_code), 0) + 1
            self.note(f"{d.dn}: CONNACK {p.return_code}")
            d.close()
            self._attempt_done(d, ok=False)
            return
        d.state = UP
        self.connected += 1
        self.connect_latencies_ms.append((time.monotonic() - d.t_start) * 1000)
        self._attempt_done(d, ok=True)

    def on_publish(self, d: Device, p: Publish) -> None:
        if p.qos == 1 and p.packet_id is not None:
            d._write(encode(PubAck(p.packet_id)))
        try:
            msg = alink.parse_downlink(self.pk, d.dn, p.topic, p.payload)
        except alink.AlinkError as e:
            self.count("bad_downlink")
            self.note(f"{d.dn}: bad downlink on {p.topic[:100]}: {e.message}")
            return
        if isinstance(msg, alink.ServiceCall):
            if msg.identifier == "GetDeviceStatus":
                data: Any = {"FirmwareVersion": "1.0.0-sim", "StorageStatus": 1, "StreamsPushing": 0,
                             "UptimeSeconds": int(time.monotonic() - self._started)}
            else:
                data = {}
            topic, payload = alink.service_reply(self.pk, d.dn, msg.id, msg.identifier, alink.CODE_OK, data,
                                                 rrpc_id=msg.rrpc_id)
            d._write(encode(Publish(topic, payload)))
            self.count("rrpc_answered" if msg.rrpc_id is not None else "service_answered")
            self.count(f"svc_{msg.identifier}")
        elif isinstance(msg, alink.PropertySet):
            topic, payload = alink.reply(p.topic, msg.id, alink.CODE_OK, {})
            d._write(encode(Publish(topic, payload)))
            self.count("property_set_answered")
        elif isinstance(msg, alink.AlinkReply):
            self.count("replies_received")
        else:
            self.count("other_downlink")
            self.note(f"{d.dn}: unhandled downlink topic {p.topic[:100]}")

    def on_lost(self, d: Device, exc: Exception | None) -> None:
        was = d.state
        d.state = IDLE
        if was == UP:
            self.connected -= 1
        if not d.ours:
            if was == UP:
                self.count("lost")
                self.note(f"{d.dn}: connection closed by the server ({exc!r})")
            elif was == CONNECTING:
                self.count("lost_before_connack")
                # EOF: the server closed it (e.g. its connect timeout); an error: a reset (e.g. the
                # kernel gave up on a connection the server never accepted: listen backlog full)
                self.count("lost_before_connack_eof" if exc is None else "lost_before_connack_error")
                self.note(f"{d.dn}: closed before CONNACK ({exc!r})")
                self._attempt_done(d, ok=False)
        ph = self._phase
        if ph is not None and ph["kind"] == "disconnect" and was in (UP, CLOSING):
            ph["pending"] -= 1
            self._check_phase()

    # --- phases ---
    def _attempt_done(self, d: Device, ok: bool) -> None:
        ph = self._phase
        if ph is None or ph["kind"] != "connect":
            return
        ph["pending"] -= 1
        ph["ok" if ok else "failed"] += 1
        ph["last"] = time.monotonic()
        self._check_phase()

    def _check_phase(self) -> None:
        ph = self._phase
        if ph is not None and ph["pending"] <= 0 and ph.get("all_started") and self._phase_done is not None \
                and not self._phase_done.done():
            self._phase_done.set_result(None)

    async def _open(self, d: Device) -> None:
        d.state = CONNECTING
        d.t_start = time.monotonic()
        for attempt in range(3):
            try:
                await self.loop.create_connection(lambda: d, self.host, self.port)
                return
            except OSError as e:
                self.count("tcp_connect_errors")
                if attempt == 2:
                    self.note(f"{d.dn}: TCP connect failed: {e!r}")
                    d.state = IDLE
                    self._attempt_done(d, ok=False)
                    return
                await asyncio.sleep(0.2 * (attempt + 1))

    async def connect(self, n: int, rate: float, timeout: float) -> dict[str, Any]:
        todo = [d for d in self.devices[:n] if d.state == IDLE]
        self._phase = ph = {"kind": "connect", "pending": len(todo), "ok": 0, "failed": 0, "all_started": False,
                            "last": time.monotonic()}
        self._phase_done = self.loop.create_future()
        self.connect_latencies_ms = []
        t0 = time.monotonic()
        tasks: set[asyncio.Task[None]] = set()
        i = 0
        slice_s = 0.01
        while i < len(todo):
            # how many should have been started by now at `rate`
            due = min(len(todo), int((time.monotonic() - t0) * rate) + 1)
            while i < due:
                t = asyncio.ensure_future(self._open(todo[i]))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                i += 1
            await asyncio.sleep(slice_s)
        ph["all_started"] = True
        started_s = time.monotonic() - t0
        self._check_phase()
        try:
            await asyncio.wait_for(asyncio.shield(self._phase_done), timeout)
            timed_out = False
        except asyncio.TimeoutError:
            timed_out = True
        lat = sorted(self.connect_latencies_ms)

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(len(lat) * p / 100))], 2) if lat else 0.0

        out = {"ev": "connected", "requested": n, "attempted": len(todo), "ok": ph["ok"], "failed": ph["failed"],
               "pending": ph["pending"], "timed_out": timed_out, "connected_now": self.connected,
               "seconds": round(ph["last"] - t0, 3), "start_seconds": round(started_s, 3),
               "connack_p50_ms": pct(50), "connack_p99_ms": pct(99), "connack_max_ms": round(lat[-1], 2) if lat else 0.0,
               "refused": dict(self.refused), "rss_kib": rss_kib()}
        self._phase = None
        return out

    async def disconnect(self, rate: float, timeout: float) -> dict[str, Any]:
        up = [d for d in self.devices if d.state == UP]
        self._phase = ph = {"kind": "disconnect", "pending": len(up), "all_started": False}
        self._phase_done = self.loop.create_future()
        t0 = time.monotonic()
        i = 0
        while i < len(up):
            due = min(len(up), int((time.monotonic() - t0) * rate) + 1)
            while i < due:
                d = up[i]
                i += 1
                if d.state != UP:
                    continue  # lost meanwhile: on_lost counted it
                d.state = CLOSING
                self.connected -= 1
                d._write(DISCONNECT)
                d.close()
            await asyncio.sleep(0.01)
        ph["all_started"] = True
        self._check_phase()
        try:
            await asyncio.wait_for(asyncio.shield(self._phase_done), timeout)
            timed_out = False
        except asyncio.TimeoutError:
            timed_out = True
        out = {"ev": "disconnected", "n": len(up), "seconds": round(time.monotonic() - t0, 3),
               "timed_out": timed_out, "pending": ph["pending"], "connected_now": self.connected}
        self._phase = None
        return out

    def stats(self) -> dict[str, Any]:
        return {"ev": "stats", "connected": self.connected, "counters": dict(self.counters),
                "refused": dict(self.refused), "notes": list(self.notes), "rss_kib": rss_kib()}

    async def keepalive_sweeper(self) -> None:
        """One timer for all devices: PINGREQ for each one silent for KEEPALIVE / 2."""
        while True:
            await asyncio.sleep(1.0)
            self.now = now = time.monotonic()
            limit = now - KEEPALIVE / 2
            for d in self.devices:
                if d.state == UP and d.last_tx < limit:
                    d._write(PINGREQ)
                    self.count("pings")


async def amain(a: argparse.Namespace) -> None:
    spec = json.loads(Path(a.devices_file).read_text())
    sim = Sim(a.host, a.port, spec["product_key"], [(d[0], d[1]) for d in spec["devices"]])
    sweeper = asyncio.ensure_future(sim.keepalive_sweeper())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def emit(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    emit({"ev": "ready", "devices": len(sim.devices), "pid": os.getpid(), "rss_kib": rss_kib()})
    while True:
        line = await reader.readline()
        if not line:
            break
        try:
            cmd = json.loads(line)
        except ValueError:
            emit({"ev": "error", "error": f"bad command {line[:100]!r}"})
            continue
        c = cmd.get("cmd")
        if c == "connect":
            emit(await sim.connect(int(cmd["n"]), float(cmd.get("rate", 500)), float(cmd.get("timeout", 120))))
        elif c == "disconnect":
            emit(await sim.disconnect(float(cmd.get("rate", 5000)), float(cmd.get("timeout", 60))))
        elif c == "stats":
            emit(sim.stats())
        elif c == "quit":
            break
        else:
            emit({"ev": "error", "error": f"unknown command {c!r}"})
    sweeper.cancel()
    for d in sim.devices:
        if d.state != IDLE:
            d.close()
    await asyncio.sleep(0.2)
    emit({**sim.stats(), "ev": "bye"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--devices-file", required=True,
                    help='JSON {"product_key": PK, "devices": [[device_name, device_secret], ...]}')
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        uvloop.run(amain(a))
    except ImportError:
        asyncio.run(amain(a))


if __name__ == "__main__":
    main()
