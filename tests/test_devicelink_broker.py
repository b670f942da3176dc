"""The embedded device broker of a real ``iotvideo serve``, spoken to with raw MQTT.

A tiny client built on our sans-IO codec (``asyncio.open_connection`` + ``PacketReader`` /
``encode``) plays devices byte for byte, so refusals (CONNACK codes, SUBACK 0x80), dropped
publishes, replaced sessions and keep-alive timeouts can be seen exactly; the cloud side goes
through the official SDKs. Hypothesis then throws malformed Alink payloads and random bytes at
the server while a well-behaved device stays connected and must keep being served.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest
from alibabacloud_iot20180120 import models as iot
from alibabacloud_iot20180120.client import Client
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from conftest import OldSdk, ServerInfo, new_config
from iotvideo.devicelink import alink, tsl
from iotvideo.devicelink.auth import expected_password, sign_content
from iotvideo.devicelink.mqtt import (
    SUBACK_FAILURE,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PacketReader,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    encode,
)

T = TypeVar("T")
TIMEOUT = 15.0


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    async def main() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(main())


# --- a raw MQTT device ------------------------------------------------------------------------


@dataclass(frozen=True)
class Dev:
    iot_id: str
    pk: str
    dn: str
    secret: str

    def login(self, method: str = "hmacsha1", timestamp: str | None = "1700000000", cid: str | None = None,
              secret: str | None = None, params: bool = True) -> dict[str, Any]:
        """CONNECT fields as the spec says: clientId parameters, username, HMAC password."""
        raw = cid if cid is not None else f"{self.pk}&{self.dn}"
        extra = f",timestamp={timestamp}" if timestamp is not None else ""
        client_id = f"{raw}|securemode=3,signmethod={method}{extra}|" if params else raw
        pw = expected_password(secret or self.secret, raw, self.pk, self.dn, timestamp, method)
        return {"client_id": client_id, "username": f"{self.dn}&{self.pk}", "password": pw.encode()}

    def topic(self, tail: str) -> str:
        return f"/sys/{self.pk}/{self.dn}/{tail}"


class Raw:
    """One TCP connection speaking MQTT through our codec; received packets queue up, None = EOF."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.inbox: asyncio.Queue[Packet | None] = asyncio.Queue()
        self.eof = asyncio.Event()
        self._pid = 0
        self._task = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, port: int) -> Raw:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w)

    async def _read(self) -> None:
        pr = PacketReader(1 << 22, role="client")
        try:
            while data := await self.reader.read(65536):
                for p in pr.feed(data):
                    await self.inbox.put(p)
        except (ConnectionError, OSError):
            pass
        finally:
            self.eof.set()
            await self.inbox.put(None)

    def send(self, packet: Packet | bytes) -> None:
        self.writer.write(packet if isinstance(packet, bytes) else encode(packet))

    async def next(self, timeout: float = 5.0) -> Packet | None:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def expect(self, kind: type[T], timeout: float = 5.0) -> T:
        p = await self.next(timeout)
        assert isinstance(p, kind), f"expected {kind.__name__}, got {p!r}"
        return p

    async def connect(self, keepalive: int = 60, **fields: Any) -> int:
        self.send(Connect(keepalive=keepalive, **fields))
        return (await self.expect(ConnAck)).return_code

    def pid(self) -> int:
        self._pid = self._pid % 65535 + 1
        return self._pid

    async def subscribe(self, *filters: str) -> tuple[int, ...]:
        pid = self.pid()
        self.send(Subscribe(pid, tuple((f, 1) for f in filters)))
        ack = await self.expect(SubAck)
        assert ack.packet_id == pid
        return ack.return_codes

    def publish(self, topic: str, body: dict[str, Any] | bytes, qos: int = 0) -> int | None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        pid = self.pid() if qos else None
        self.send(Publish(topic, payload, qos=qos, packet_id=pid))
        return pid

    async def message(self, timeout: float = 5.0) -> tuple[str, dict[str, Any]]:
        """The next PUBLISH (skipping acks), its JSON payload decoded."""
        while True:
            p = await self.next(timeout)
            assert p is not None, "connection closed"
            if isinstance(p, Publish):
                return p.topic, json.loads(p.payload)

    async def closed_within(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.eof.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def close(self) -> None:
        self._task.cancel()
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def online(server: ServerInfo, dev: Dev, keepalive: int = 60, **login: Any) -> Raw:
    c = await Raw.open(server.mqtt_port)
    rc = await c.connect(keepalive=keepalive, **dev.login(**login))
    assert rc == 0, f"CONNACK {rc}"
    return c


# --- the cloud ----------------------------------------------------------------------------------


class Cloud:
    def __init__(self, server: ServerInfo) -> None:
        key = server.new_key()
        self.server = server
        self.new = Client(new_config(server, key, None))
        self.old = OldSdk(server, key)
        self.pk = self.old.common("CreateProduct", ProductName="cam-broker")["Data"]["ProductKey"]

    def register(self) -> Dev:
        d = self.old.common("RegisterDevice", ProductKey=self.pk, DeviceName="cam-" + secrets.token_hex(5))["Data"]
        return Dev(d["IotId"], d["ProductKey"], d["DeviceName"], d["DeviceSecret"])

    def status(self, dev: Dev) -> str:
        return str(self.old.common("QueryDeviceDetail", IotId=dev.iot_id)["Data"]["Status"])

    def invoke(self, dev: Dev, identifier: str, args: dict[str, Any]) -> Any:
        return self.new.invoke_thing_service(iot.InvokeThingServiceRequest(
            iot_id=dev.iot_id, identifier=identifier, args=json.dumps(args))).body

    def values(self, dev: Dev) -> dict[str, Any]:
        body = self.old.common("QueryDevicePropertyStatus", IotId=dev.iot_id)
        return {p["Identifier"]: p.get("Value") for p in body["Data"]["List"]["PropertyStatusInfo"]}

    def healthy(self) -> bool:
        return httpx.get(self.server.url + "healthz", timeout=5).status_code == 200


@pytest.fixture(scope="module")
def cloud(server: ServerInfo) -> Cloud:
    return Cloud(server)


async def until(check: Callable[[], Any], timeout: float = TIMEOUT, what: str = "condition") -> Any:
    """Polls a blocking ``check`` (in a thread) until truthy; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(check)
        if last:
            return last
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")


# --- authentication -------------------------------------------------------------------------------


def test_sign_methods_with_and_without_timestamp_are_accepted(cloud: Cloud) -> None:
    dev = cloud.register()

    async def body() -> None:
        variants: list[dict[str, Any]] = [
            {"method": "hmacsha1"}, {"method": "hmacsha256"}, {"method": "hmacmd5"},
            {"method": "hmacsha1", "timestamp": None}, {"method": "hmacsha256", "timestamp": None},
            {"method": "hmacmd5", "timestamp": None}, {"method": "hmacsha1", "timestamp": "1700000000123"},
            {"method": "hmacsha1", "cid": "AA:BB:CC:DD:EE:FF"},      # any client id (a MAC address)
            {"method": "hmacsha1", "timestamp": None, "params": False},  # no parameters: hmacsha1
        ]
        for v in variants:
            c = await Raw.open(cloud.server.mqtt_port)
            assert await c.connect(**dev.login(**v)) == 0, v
            c.send(Disconnect())
            assert await c.closed_within(5), v
            await c.close()
        # Upper-case hex is accepted too; a METHOD name in capitals as well.
        fields = dev.login(method="HMACSHA256")
        fields["password"] = fields["password"].upper()
        c = await Raw.open(cloud.server.mqtt_port)
        assert await c.connect(**fields) == 0
        await until(lambda: cloud.status(dev) == "ONLINE", what="ONLINE")
        c.send(Disconnect())
        await c.close()
        await until(lambda: cloud.status(dev) == "OFFLINE", what="OFFLINE")

    run(body())


def test_a_device_that_comes_and_goes_at_once_is_activated_and_offline(cloud: Cloud) -> None:
    dev = cloud.register()

    async def body() -> None:
        c = await online(cloud.server, dev)
        c.send(Disconnect())  # well within the server's status-write interval
        assert await c.closed_within(5)
        await c.close()
        await until(lambda: cloud.status(dev) == "OFFLINE", what="OFFLINE")
        d = (await asyncio.to_thread(cloud.old.common, "QueryDeviceDetail", IotId=dev.iot_id))["Data"]
        assert d["GmtActive"] and d["GmtOnline"] and d["IpAddress"] == "127.0.0.1"

    run(body())


def test_refused_connects(cloud: Cloud) -> None:
    dev, other, disabled, deleted = (cloud.register() for _ in range(4))
    cloud.old.common("DisableThing", IotId=disabled.iot_id)

    async def refused(fields: dict[str, Any]) -> int:
        c = await Raw.open(cloud.server.mqtt_port)
        rc = await c.connect(**fields)
        assert await c.closed_within(5), "a refused connection must be closed"
        await c.close()
        return rc

    async def body() -> None:
        assert await refused(dev.login(secret="not-the-secret")) == 4
        assert await refused(dev.login(method="hmacsha256", secret="not-the-secret", timestamp=None)) == 4
        wrong_ts = dev.login()
        wrong_ts["client_id"] = wrong_ts["client_id"].replace("1700000000", "1700000001")  # signed ts differs
        assert await refused(wrong_ts) == 4
        assert await refused({**dev.login(), "password": None}) == 4
        assert await refused({**dev.login(), "username": None, "password": None}) == 4
        assert await refused({**dev.login(), "username": f"{dev.pk}&{dev.dn}"}) == 4     # reversed
        sha512 = dev.login()  # an unsupported method (signed with SHA-512 all the same)
        sha512["client_id"] = sha512["client_id"].replace("hmacsha1", "hmacsha512")
        sha512["password"] = hmac.new(dev.secret.encode(), sign_content(f"{dev.pk}&{dev.dn}", dev.pk, dev.dn,
                                                                        "1700000000").encode(),
                                      hashlib.sha512).hexdigest().encode()
        assert await refused(sha512) == 4
        assert await refused({**dev.login(), "client_id": f"{other.pk}&{other.dn}|signmethod=hmacsha1|"}) == 4
        assert await refused({**dev.login(), "client_id": f"{dev.pk}&{dev.dn}|securemode|"}) == 2
        assert await refused({**dev.login(), "client_id": f"{dev.pk}&{dev.dn}|a=1,a=2|"}) == 2
        unknown = Dev("x", dev.pk, "cam-nobody", "s3cr3t")
        assert await refused(unknown.login()) == 5
        assert await refused(Dev("x", "a1NoSuchPk0", "cam0001", "s").login()) == 5
        assert await refused(disabled.login()) == 5
        # A deleted device is kicked and cannot come back.
        c = await online(cloud.server, deleted)
        await asyncio.to_thread(cloud.old.common, "DeleteDevice", IotId=deleted.iot_id)
        assert await c.closed_within(5)
        await c.close()
        assert await refused(deleted.login()) == 5
        # A first packet that is not CONNECT: closed without a CONNACK.
        c = await Raw.open(cloud.server.mqtt_port)
        c.send(PingReq())
        assert await c.next() is None
        await c.close()
        # A refusal is not remembered: registered (or enabled) a moment later, a device gets in.
        late_name = "cam-late-" + secrets.token_hex(3)
        assert await refused(Dev("x", dev.pk, late_name, "s3cr3t").login()) == 5
        d = (await asyncio.to_thread(cloud.old.common, "RegisterDevice", ProductKey=dev.pk,
                                     DeviceName=late_name))["Data"]
        late = await online(cloud.server, Dev(d["IotId"], dev.pk, late_name, d["DeviceSecret"]))
        await late.close()
        await asyncio.to_thread(cloud.old.common, "EnableThing", IotId=disabled.iot_id)
        back = await online(cloud.server, disabled)
        await back.close()
        await asyncio.to_thread(cloud.old.common, "DisableThing", IotId=disabled.iot_id)
        # Nothing of this made anyone active.
        assert cloud.status(dev) == "UNACTIVE" and cloud.status(disabled) == "DISABLE"
        assert "mqtt connect refused" in cloud.server.log()

    run(body())


# --- access rules, implicit delivery, sessions ------------------------------------------------------


def test_a_device_cannot_reach_another_devices_topics(cloud: Cloud) -> None:
    a, b = cloud.register(), cloud.register()

    async def body() -> None:
        ca, cb = await online(cloud.server, a), await online(cloud.server, b)
        codes = await ca.subscribe(f"/sys/{b.pk}/{b.dn}/#", "#", "/sys/#", f"/sys/{a.pk}/+/#",
                                   f"/ext/rrpc/+/sys/{b.pk}/{b.dn}/#", "/ext/rrpc/#",
                                   a.topic("#"), f"/ext/rrpc/+/sys/{a.pk}/{a.dn}/#", f"/{a.pk}/{a.dn}/user/#")
        assert codes == (SUBACK_FAILURE,) * 6 + (1, 1, 1)
        # B has a synchronous call pending; A tries to answer it, to post as B, and to
        # command B and itself. QoS 1 publishes are acknowledged, then dropped.
        call = asyncio.ensure_future(asyncio.to_thread(cloud.invoke, b, "GetDeviceStatus", {}))
        rtopic, req = await cb.message()
        assert rtopic.startswith("/ext/rrpc/") and rtopic.endswith(f"/sys/{b.pk}/{b.dn}/thing/service/GetDeviceStatus")
        forged = [
            (rtopic, {"id": req["id"], "code": 200, "data": {"Forged": True}}),
            # B's call id on A's own RRPC topic, and as a reply to an async call of A's.
            (rtopic.replace(f"/sys/{b.pk}/{b.dn}/", f"/sys/{a.pk}/{a.dn}/"),
             {"id": req["id"], "code": 200, "data": {"Forged": 2}}),
            (a.topic("thing/service/GetDeviceStatus_reply"), {"id": req["id"], "code": 200, "data": {"Forged": 3}}),
            (b.topic("thing/event/property/post"), {"id": "1", "params": {"FirmwareVersion": "evil"}}),
            (b.topic("thing/event/AlarmEvent/post"), {"id": "2", "params": {"value": {"AlarmType": 1}}}),
            (b.topic("thing/service/ForceIFrame"), {"id": "3", "params": {"StreamType": 0}}),
            (b.topic("thing/service/property/set"), {"id": "4", "params": {"AlarmSwitch": 0}}),
            (a.topic("thing/service/ForceIFrame"), {"id": "5", "params": {"StreamType": 0}}),
            (f"/{b.pk}/{b.dn}/user/update", {"id": "6"}),
            (f"/ota/device/inform/{b.pk}/{b.dn}", {"id": "7", "params": {"version": "evil"}}),
        ]
        for topic, payload in forged:
            pid = ca.publish(topic, payload, qos=1)
            assert (await ca.expect(PubAck)).packet_id == pid
        # A's own post right after: its reply proves the server has handled all of the above.
        ca.publish(a.topic("thing/event/property/post"), {"id": "8", "params": {"StatusLight": 1}})
        topic, reply = await ca.message()
        assert (topic, reply["id"], reply["code"]) == (a.topic("thing/event/property/post_reply"), "8", 200)
        # B answers its call for real: the cloud gets B's answer, not A's.
        cb.publish(rtopic, {"id": req["id"], "code": 200, "data": {"Real": 1}})
        result = await asyncio.wait_for(call, 10)
        assert result.success is True and json.loads(result.data.result) == {"Real": 1}
        # B received nothing of A's; the next thing it hears is the cloud's next call.
        assert cloud.invoke(b, "ForceIFrame", {"StreamType": 1}).success is True
        topic, msg = await cb.message()
        assert topic == b.topic("thing/service/ForceIFrame") and msg["params"] == {"StreamType": 1}
        assert cb.inbox.empty()
        values = await asyncio.to_thread(cloud.values, b)
        assert values["FirmwareVersion"] is None
        assert (await asyncio.to_thread(cloud.old.common, "QueryDeviceDetail", IotId=b.iot_id))[
            "Data"]["FirmwareVersion"] == ""
        await ca.close()
        await cb.close()

    run(body())


def test_implicit_delivery_without_subscribing(cloud: Cloud) -> None:
    dev = cloud.register()

    async def body() -> None:
        c = await online(cloud.server, dev)  # never SUBSCRIBEs
        # *_reply to its posts.
        c.publish(dev.topic("thing/event/property/post"),
                  {"id": "11", "version": "1.0", "method": "thing.event.property.post",
                   "params": {"FirmwareVersion": "3.1.4", "StorageStatus": 1}})
        topic, reply = await c.message()
        assert topic == dev.topic("thing/event/property/post_reply")
        assert reply == {"id": "11", "code": 200, "data": {}, "message": "success", "version": "1.0"}
        c.publish(dev.topic("thing/event/AlarmEvent/post"),
                  {"id": 12, "params": {"value": {"AlarmType": 2, "AlarmTime": 1700000000}, "time": 1700000000123}})
        topic, reply = await c.message()
        assert (topic, reply["id"], reply["code"]) == (dev.topic("thing/event/AlarmEvent/post_reply"), "12", 200)
        # An async service call.
        res = await asyncio.to_thread(cloud.invoke, dev, "ForceIFrame", {"StreamType": 0})
        assert res.success is True
        topic, call = await c.message()
        assert topic == dev.topic("thing/service/ForceIFrame")
        assert call == {"id": res.data.message_id, "version": "1.0", "params": {"StreamType": 0},
                        "method": "thing.service.ForceIFrame"}
        c.publish(topic + "_reply", {"id": call["id"], "code": 200, "data": {}})
        # A property set.
        sp = await asyncio.to_thread(lambda: cloud.old.common("SetDeviceProperty", IotId=dev.iot_id,
                                                              Items='{"StatusLight":0}'))
        topic, req = await c.message()
        assert topic == dev.topic("thing/service/property/set")
        assert (req["id"], req["params"], req["method"]) == (sp["Data"]["MessageId"], {"StatusLight": 0},
                                                             "thing.service.property.set")
        # A synchronous call over RRPC, answered on the same topic.
        for code, data in ((200, {"FirmwareVersion": "3.1.4", "UptimeSeconds": 5}), (501, {})):
            pending = asyncio.ensure_future(asyncio.to_thread(cloud.invoke, dev, "GetDeviceStatus", {}))
            topic, req = await c.message()
            assert topic == f"/ext/rrpc/{req['id']}/sys/{dev.pk}/{dev.dn}/thing/service/GetDeviceStatus"
            c.publish(topic, {"id": req["id"], "code": code, "data": data})
            result = await asyncio.wait_for(pending, 10)
            if code == 200:
                assert result.success is True and json.loads(result.data.result) == data
                assert result.data.message_id == req["id"]
            else:  # the device's failure is the caller's
                assert result.success is False and result.code == "501", result
        await until(lambda: cloud.values(dev)["FirmwareVersion"] == "3.1.4", what="the posted firmware")
        await c.close()

    run(body())


def test_a_second_connection_replaces_the_first(cloud: Cloud) -> None:
    dev = cloud.register()

    async def body() -> None:
        first = await online(cloud.server, dev)
        await until(lambda: cloud.status(dev) == "ONLINE", what="ONLINE")
        second = await online(cloud.server, dev, method="hmacsha256", cid="another-client-id")
        assert await first.closed_within(5), "the first connection must be closed"
        assert (await asyncio.to_thread(cloud.invoke, dev, "ForceIFrame", {"StreamType": 0})).success is True
        topic, _ = await second.message()
        assert topic == dev.topic("thing/service/ForceIFrame")
        # The replaced connection never makes the device OFFLINE (status writes land within
        # 0.1 s; watch for well over that).
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:
            assert await asyncio.to_thread(cloud.status, dev) == "ONLINE"
            await asyncio.sleep(0.1)
        second.send(PingReq())
        assert isinstance(await second.next(), PingResp)
        second.send(Disconnect())
        await until(lambda: cloud.status(dev) == "OFFLINE", what="OFFLINE")
        await first.close()
        await second.close()

    run(body())


def test_keep_alive_timeout_drops_a_silent_device(cloud: Cloud) -> None:
    silent, talker = cloud.register(), cloud.register()

    async def body() -> None:
        t = await online(cloud.server, talker, keepalive=2)
        s = await online(cloud.server, silent, keepalive=2)
        started = time.monotonic()  # the server last heard from the silent one at its CONNECT

        async def ping() -> None:
            while not s.eof.is_set():
                t.send(PingReq())
                assert isinstance(await t.next(), PingResp)
                await asyncio.sleep(1.0)

        pinger = asyncio.ensure_future(ping())
        await until(lambda: cloud.status(silent) == "ONLINE" and cloud.status(talker) == "ONLINE", what="ONLINE")
        assert await s.closed_within(6), "a silent device must be dropped"
        took = time.monotonic() - started
        assert 2.9 <= took <= 4.8, took  # 1.5 x keep-alive, checked every second
        await pinger
        await until(lambda: cloud.status(silent) == "OFFLINE", what="OFFLINE after the keep-alive timeout")
        # The one that kept pinging is still there.
        assert not t.eof.is_set()
        assert cloud.status(talker) == "ONLINE"
        await s.close()
        await t.close()

    run(body())


# --- fuzzing ----------------------------------------------------------------------------------------


class LoopThread:
    """An event loop in a thread, so hypothesis (synchronous) can drive long-lived connections."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class GoodDevice:
    """A device that answers every call at once and records what it heard."""

    def __init__(self, dev: Dev, conn: Raw) -> None:
        self.dev, self.conn = dev, conn
        self.heard: list[str] = []
        self.task = asyncio.ensure_future(self._serve())

    async def _serve(self) -> None:
        while (p := await self.conn.inbox.get()) is not None:
            if not isinstance(p, Publish):
                continue
            self.heard.append(p.topic)
            req = json.loads(p.payload)
            if p.topic.startswith("/ext/rrpc/"):
                self.conn.publish(p.topic, {"id": req["id"], "code": 200, "data": {"Good": True}})
            elif "/thing/service/" in p.topic:
                self.conn.publish(p.topic + "_reply", {"id": req["id"], "code": 200, "data": {}})


@dataclass
class FuzzEnv:
    cloud: Cloud
    lt: LoopThread
    good: GoodDevice
    bad: Dev
    bad_conn: Raw | None = None
    log_from: int = 0
    replies: int = 0
    disconnects: int = 0

    def check_good_is_served(self) -> None:
        """The well-behaved device, connected all along, still answers calls; the server lives."""
        assert self.cloud.healthy()
        assert self.lt.run(self._still_connected())
        before = len(self.good.heard)
        r = self.cloud.invoke(self.good.dev, "GetDeviceStatus", {})
        assert r.success is True and json.loads(r.data.result) == {"Good": True}, r
        assert self.cloud.invoke(self.good.dev, "ForceIFrame", {"StreamType": 0}).success is True
        deadline = time.monotonic() + TIMEOUT
        while len(self.good.heard) < before + 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        # It heard exactly the cloud's calls: nothing the bad device sent reached it.
        assert all(t.startswith("/ext/rrpc/") and t.endswith("/thing/service/GetDeviceStatus")
                   or t == self.good.dev.topic("thing/service/ForceIFrame") for t in self.good.heard), self.good.heard
        assert len(self.good.heard) == before + 2

    async def _still_connected(self) -> bool:
        return not self.good.conn.eof.is_set()


@pytest.fixture(scope="module")
def fuzz(cloud: Cloud) -> Iterator[FuzzEnv]:
    lt = LoopThread()
    good_dev, bad = cloud.register(), cloud.register()

    async def start() -> GoodDevice:
        return GoodDevice(good_dev, await online(cloud.server, good_dev))

    env = FuzzEnv(cloud, lt, lt.run(start()), bad, log_from=len(cloud.server.log()))
    try:
        env.check_good_is_served()
        yield env
        env.check_good_is_served()
    finally:
        async def stop() -> None:
            for c in (env.good.conn, env.bad_conn):
                if c is not None:
                    await c.close()
        lt.run(stop())
        lt.stop()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
PROPERTY_NAMES = st.sampled_from([*tsl.PROPERTIES, "NoSuchProperty", "value", "time", ""])
EVENT_VALUES = st.dictionaries(st.sampled_from(["AlarmType", "AlarmPicId", "Data", "AlarmTime", "StorageStatus",
                                               "ErrorMessage", "X"]), JSON, max_size=4)
PARAMS = st.one_of(JSON, st.dictionaries(PROPERTY_NAMES, JSON, max_size=5),
                   st.fixed_dictionaries({"value": st.one_of(JSON, EVENT_VALUES)}, optional={"time": JSON}))
METHODS = st.one_of(st.sampled_from(["thing.event.property.post", "thing.event.AlarmEvent.post",
                                     "thing.event.StorageError.post", "thing.service.ForceIFrame"]),
                    st.text(max_size=20))
# Anything at all in the fields ...
ANY_BODY = st.fixed_dictionaries({}, optional={
    "id": st.one_of(st.text(max_size=70), st.integers(min_value=-2**64, max_value=2**64), JSON),
    "version": JSON, "method": METHODS, "params": PARAMS})
# ... and well-addressed posts whose content is wrong (types, ranges, unknown identifiers).
ADDRESSED_BODY = st.fixed_dictionaries(
    {"id": st.integers(0, 10**12).map(str), "params": PARAMS},
    optional={"version": st.just("1.0"), "method": METHODS})
BODIES = st.one_of(ANY_BODY, ADDRESSED_BODY).map(lambda body: json.dumps(body).encode())
BAD_UTF8 = st.builds(lambda pre, bad: b'{"id":"7","params":{"FirmwareVersion":"' + pre + bad + b'"}}',
                     st.binary(max_size=4).filter(lambda b: b'"' not in b and b"\\" not in b),
                     st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"]))
OVERSIZED = st.integers(64 * 1024 + 1, 100 * 1024).map(
    lambda n: b'{"id":"8","params":{"FirmwareVersion":"' + b"x" * n + b'"}}')
DEEP = st.integers(10, 3000).map(lambda d: b'{"id":"9","params":{"AlarmSwitch":' + b"[" * d + b"]" * d + b"}}")
PAYLOADS = st.one_of(BODIES, st.binary(max_size=200), st.text(max_size=60).map(str.encode), BAD_UTF8,
                     OVERSIZED, DEEP)
POST_TOPICS = st.sampled_from(["thing/event/property/post", "thing/event/AlarmEvent/post",
                               "thing/event/StorageError/post", "thing/event/NoSuchEvent/post"])
TOO_BIG_FOR_MQTT = b'{"id":"10","params":{}}' + b" " * (300 * 1024)


def expected_reply(dev: Dev, topic: str, payload: bytes) -> tuple[str, int]:
    """The ``(id, code)`` the documented Alink rules give for a post (the codec is the oracle)."""
    kind = alink.classify(dev.pk, dev.dn, topic)
    try:
        msg = alink.parse_uplink(kind, payload)
    except alink.AlinkError as e:
        return e.msg_id or "0", e.code
    if isinstance(msg, alink.PropertyPostMsg):
        errors = tsl.validate_properties(msg.params)
    else:
        assert isinstance(msg, alink.EventPostMsg)
        errors = tsl.validate_event(msg.identifier, msg.value)
    return msg.id, errors[0].code if errors else alink.CODE_OK


def looks_valid(payload: bytes) -> bool:
    """An independent minimum for a 200: a JSON object of at most 64 KiB with object params."""
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return len(payload) <= 64 * 1024 and isinstance(body, dict) and isinstance(body.get("params"), dict)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(tail=POST_TOPICS, payload=PAYLOADS)
@example(tail="thing/event/property/post", payload=b"")
@example(tail="thing/event/property/post", payload=b"\xff\xfe{")
@example(tail="thing/event/property/post", payload=b'{"id":"1","params":{"AlarmSwitch":"yes"}}')
@example(tail="thing/event/property/post", payload=b'{"id":"1","params":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
@example(tail="thing/event/AlarmEvent/post", payload=b'{"id":"1","params":{"value":{"AlarmType":"1"}}}')
@example(tail="thing/event/AlarmEvent/post", payload=b'{"id":{"x":1},"params":{"value":{}}}')
@example(tail="thing/event/property/post", payload=TOO_BIG_FOR_MQTT)
def test_fuzz_malformed_posts_get_an_error_reply_and_affect_no_one_else(fuzz: FuzzEnv, tail: str,
                                                                        payload: bytes) -> None:
    bad = fuzz.bad
    topic = bad.topic(tail)

    async def one() -> str:
        if fuzz.bad_conn is None or fuzz.bad_conn.eof.is_set():
            if fuzz.bad_conn is not None:
                await fuzz.bad_conn.close()
            fuzz.bad_conn = await online(fuzz.cloud.server, bad)
        c = fuzz.bad_conn
        c.publish(topic, payload)
        if len(payload) > 256 * 1024:  # beyond the broker's packet limit: the device is cut off
            assert await c.closed_within(5), "an oversized packet must close the connection"
            fuzz.disconnects += 1
            return "disconnected"
        rtopic, reply = await c.message(timeout=10)
        want_id, want_code = expected_reply(bad, topic, payload)
        assert rtopic == topic + "_reply"
        assert (reply["id"], reply["code"]) == (want_id, want_code), (payload[:200], reply)
        assert set(reply) == {"id", "code", "data", "message", "version"} and reply["message"]
        if reply["code"] == 200:
            assert looks_valid(payload), payload[:200]
        fuzz.replies += 1
        return f"reply code {reply['code']}"

    event(fuzz.lt.run(one()))  # what happened, for --hypothesis-show-statistics


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(min_size=1, max_size=600), authenticated=st.booleans(), chunks=st.integers(1, 4))
@example(data=bytes([0x30, 0x07, 0x00, 0x02, 0xFF, 0xFE]) + b"abc", authenticated=True, chunks=1)  # bad UTF-8 topic
@example(data=bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]), authenticated=True, chunks=1)  # 5-byte length
@example(data=bytes([0x30, 0xFF, 0xFF, 0xFF, 0x7F]), authenticated=True, chunks=1)  # 256 MiB announced
@example(data=bytes([0xF0, 0x00]), authenticated=True, chunks=1)  # reserved packet type
@example(data=bytes([0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 0x23, 0x03]), authenticated=True, chunks=1)  # QoS 3
@example(data=encode(Connect(client_id="x")), authenticated=True, chunks=1)  # a second CONNECT
@example(data=bytes([0x10, 0x0C, 0x00, 0x04]) + b"MQTX" + bytes([0x04, 0x02, 0x00, 0x3C, 0x00, 0x00]),
         authenticated=False, chunks=1)  # wrong protocol name
@example(data=bytes([0x36, 0x05, 0x00, 0x01, 0x61, 0x00, 0x01]), authenticated=True, chunks=1)  # QoS 3 publish
def test_fuzz_random_bytes_never_hurt_the_server(fuzz: FuzzEnv, data: bytes, authenticated: bool,
                                                 chunks: int) -> None:
    async def one() -> None:
        c = await Raw.open(fuzz.cloud.server.mqtt_port)
        try:
            if authenticated:
                assert await c.connect(**fuzz.bad.login()) == 0
            step = max(1, len(data) // chunks)
            for i in range(0, len(data), step):
                c.send(data[i:i + step])
                await c.writer.drain()
        except ConnectionError:
            pass  # the server may cut a connection off at any point of the garbage
        finally:
            await c.close()

    fuzz.lt.run(one())


def test_fuzz_aftermath(fuzz: FuzzEnv) -> None:
    """After both fuzzers: the server is up, the good device is served and heard nothing else,
    the bad device's refused posts left no trace on the good one."""
    fuzz.check_good_is_served()
    assert fuzz.replies > 50
    values = fuzz.cloud.values(fuzz.good.dev)
    assert all(v is None for v in values.values())
    assert fuzz.cloud.status(fuzz.good.dev) == "ONLINE"
    log = fuzz.cloud.server.log()[fuzz.log_from:]
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
