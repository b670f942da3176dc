"""External broker mode against a real Mosquitto started by these tests.

The Mosquitto runs on a free port with a password file and an ACL file: the server connects as the
privileged user ``iotvideo`` (``mqtt://iotvideo:…@127.0.0.1:PORT``), each device as ``{dn}&{pk}``
with its HMAC password, confined to its own topics, and a ``tester`` user plays the broker's
presence events. Mosquitto drops client publications to ``$SYS``, so the server is told to take
presence from ``iotvideo/presence/{clientid}/connected|disconnected`` (``?presence=…``); Mosquitto
has no auto-subscription either, so the test devices subscribe to their topics themselves.

With PostgreSQL on the loopback, two server nodes share one database and one share group; without
it, one node on SQLite runs and the two-node test is skipped.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import OldSdk, ServerInfo, free_port, pg_available, start_server, stop_server
from iotvideo.bus import Bus
from iotvideo.config import Settings
from iotvideo.devicelink import alink, auth
from iotvideo.devicelink.external import BrokerUrl, ExternalBroker, ExternalBrokerError, device_of, parse_broker_url
from iotvideo.devicelink.link import DeviceLink, Target
from iotvideo.devicelink.mqtt import Publish
from iotvideo.devicelink.mqtt.client import MqttClient, MqttConnectError
from iotvideo.domain.device_state import DeviceCredentials
from iotvideo.errors import BusinessError

MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None)

SERVER_USER, SERVER_PASSWORD = "iotvideo", "srv-" + secrets.token_hex(8)
TESTER_USER, TESTER_PASSWORD = "tester", "tst-" + secrets.token_hex(8)
PRESENCE = "iotvideo/presence"
WAIT = 10.0


# --- Mosquitto ---------------------------------------------------------------------------------------

def mosquitto_password(user: str, password: str) -> str:
    """A password-file line in Mosquitto 2's ``$7$`` format (PBKDF2-SHA512, 101 iterations)."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101, 64)
    return f"{user}:$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def make_certificates(tmp: Path) -> Path:
    """A CA and a server certificate for localhost / 127.0.0.1 (``server.pem``, ``server.key``)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "iotvideo test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (tmp / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    os.chmod(tmp / "server.key", 0o600)
    return tmp / "ca.pem"


class Mosquitto:
    """A Mosquitto of our own: users with passwords and per-user ACLs, reloaded on SIGHUP."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.tls_port = free_port()
        self.ca_file = make_certificates(tmp)
        self.log_path = tmp / "mosquitto.log"
        self.users: dict[str, tuple[str, list[str]]] = {
            SERVER_USER: (SERVER_PASSWORD, ["topic readwrite #"]),
            TESTER_USER: (TESTER_PASSWORD, ["topic readwrite #"]),
        }
        self._write_auth()
        conf = tmp / "mosquitto.conf"
        conf.write_text("\n".join([
            # Started as root, Mosquitto would switch to the user "mosquitto", who cannot read
            # pytest's private temporary directory; as anyone else this line has no effect.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            "per_listener_settings false",
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous false",
            f"password_file {tmp / 'passwd'}",
            f"acl_file {tmp / 'acl'}",
            f"listener {self.tls_port} 127.0.0.1",
            f"cafile {self.ca_file}",
            f"certfile {tmp / 'server.pem'}",
            f"keyfile {tmp / 'server.key'}",
            "persistence false",
            f"log_dest file {self.log_path}",
            "log_type all",
            "",
        ]))
        assert MOSQUITTO is not None
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + WAIT
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not start: {self.log()}")

    def _write_auth(self) -> None:
        (self.tmp / "passwd").write_text("".join(mosquitto_password(u, p) + "\n" for u, (p, _) in self.users.items()))
        acl = []
        for user, (_, rules) in self.users.items():
            acl += [f"user {user}", *rules, ""]
        (self.tmp / "acl").write_text("\n".join(acl))
        os.chmod(self.tmp / "passwd", 0o600)
        os.chmod(self.tmp / "acl", 0o600)

    def add_device(self, pk: str, dn: str, password: str) -> None:
        """The device may use its own topics only (what an auth/ACL hook would enforce)."""
        self.users[f"{dn}&{pk}"] = (password, [
            f"topic readwrite /sys/{pk}/{dn}/#",
            f"topic readwrite /ext/rrpc/+/sys/{pk}/{dn}/#",
            f"topic write /ota/device/inform/{pk}/{dn}",
        ])
        self._write_auth()
        self.proc.send_signal(signal.SIGHUP)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


# --- servers -----------------------------------------------------------------------------------------

@dataclass
class Cluster:
    broker: Mosquitto
    nodes: list[ServerInfo]
    sdks: list[OldSdk] = field(default_factory=list)
    pk: str = ""

    @property
    def a(self) -> OldSdk:
        return self.sdks[0]


def server_env(broker: Mosquitto) -> dict[str, str]:
    url = (f"mqtt://{SERVER_USER}:{SERVER_PASSWORD}@127.0.0.1:{broker.port}"
           f"?presence={PRESENCE}&resync=1&client_id=iotvideo-test")
    return {"IOTVIDEO_MQTT_MODE": "external", "IOTVIDEO_MQTT_BROKER_URL": url, "IOTVIDEO_RPC_TIMEOUT_S": "3"}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    if MOSQUITTO is None:
        pytest.skip("the mosquitto binary is not installed (apt-get install mosquitto)")
    b = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def cluster(broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    nodes: list[ServerInfo] = []
    try:
        env = server_env(broker)
        if pg_available():
            a = start_server("postgres", tmp_path_factory.mktemp("node-a"), env)
            nodes.append(a)
            # Node B: same database, same master key (secrets are sealed with it), own data dir.
            tmp_b = tmp_path_factory.mktemp("node-b")
            shutil.copy(a.data_dir / "master.key", tmp_b / "master.key")
            assert a.database_url is not None
            nodes.append(start_server("sqlite", tmp_b, {**env, "IOTVIDEO_DATABASE_URL": a.database_url}))
        elif os.environ.get("CI"):
            pytest.fail("PostgreSQL is not reachable on the loopback; CI must test two nodes")
        else:
            nodes.append(start_server("sqlite", tmp_path_factory.mktemp("node-a"), env))
        key = nodes[0].new_key()
        c = Cluster(broker, nodes, [OldSdk(n, key) for n in nodes])
        c.pk = c.a.common("CreateProduct", ProductName="cam-" + secrets.token_hex(3))["Data"]["ProductKey"]
        yield c
    finally:
        for n in reversed(nodes):  # node A last: it drops the PostgreSQL database
            stop_server(n)


# --- a device on our MQTT client -----------------------------------------------------------------------

class Device:
    """A camera on the device protocol: subscribes to its own topics (Mosquitto has no
    auto-subscription), answers service calls and property sets, collects the cloud's replies."""

    TS = "1700000000"

    def __init__(self, cluster: Cluster | Mosquitto, dn: str, *, pk: str = "", secret: str = "", iot_id: str = "",
                 tls: bool = False) -> None:
        if isinstance(cluster, Cluster):
            d = cluster.a.common("RegisterDevice", ProductKey=cluster.pk, DeviceName=dn)["Data"]
            iot_id, pk, dn, secret = d["IotId"], d["ProductKey"], d["DeviceName"], d["DeviceSecret"]
            broker = cluster.broker
        else:
            broker = cluster
        self.iot_id, self.pk, self.dn, self.secret = iot_id, pk, dn, secret
        self.username = f"{self.dn}&{self.pk}"
        self.client_id = f"{self.pk}&{self.dn}|securemode=3,signmethod=hmacsha1,timestamp={self.TS}|"
        self.password = auth.expected_password(self.secret, f"{self.pk}&{self.dn}", self.pk, self.dn, self.TS,
                                               "hmacsha1")
        self.port = broker.tls_port if tls else broker.port
        self.ssl = ssl.create_default_context(cafile=str(broker.ca_file)) if tls else None
        broker.add_device(self.pk, self.dn, self.password)
        self.client: MqttClient | None = None
        self.replies: list[alink.AlinkReply] = []
        self.calls: list[alink.ServiceCall | alink.PropertySet] = []
        self._ids = iter(range(1, 10**9))
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Device:
        deadline = time.monotonic() + WAIT
        while True:  # Mosquitto reloads the password file on SIGHUP, asynchronously
            client = MqttClient(on_message=self._on_message)
            try:
                await client.connect("localhost" if self.ssl else "127.0.0.1", self.port, client_id=self.client_id,
                                     username=self.username, password=self.password, keepalive=30, ssl=self.ssl)
                break
            except MqttConnectError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        codes = await client.subscribe([(f"/sys/{self.pk}/{self.dn}/#", 1),
                                        (f"/ext/rrpc/+/sys/{self.pk}/{self.dn}/#", 1)])
        assert codes == [1, 1]
        self.client = client
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.client is not None:
            await self.client.disconnect()
        for t in list(self._tasks):
            await asyncio.gather(t, return_exceptions=True)

    def _on_message(self, msg: Publish) -> None:
        try:
            got = alink.parse_downlink(self.pk, self.dn, msg.topic, msg.payload)
        except alink.AlinkError:
            return  # e.g. our own RRPC reply, echoed back (MQTT 3.1.1 has no no-local)
        if isinstance(got, alink.AlinkReply):
            self.replies.append(got)
        elif isinstance(got, (alink.ServiceCall, alink.PropertySet)):
            self.calls.append(got)
            task = asyncio.ensure_future(self._answer(got))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, call: alink.ServiceCall | alink.PropertySet) -> None:
        assert self.client is not None
        if isinstance(call, alink.PropertySet):
            topic, payload = alink.reply(f"/sys/{self.pk}/{self.dn}/thing/service/property/set", call.id)
        else:
            data = {"FirmwareVersion": "2.0.1", "StorageStatus": 1, "StreamsPushing": 0, "UptimeSeconds": 42} \
                if call.identifier == "GetDeviceStatus" else {}
            topic, payload = alink.service_reply(self.pk, self.dn, call.id, call.identifier, 200, data,
                                                 rrpc_id=call.rrpc_id)
        await self.client.publish(topic, payload, 1)

    async def post_properties(self, params: dict[str, Any]) -> str:
        assert self.client is not None
        msg_id = str(next(self._ids))
        await self.client.publish(*alink.property_post(self.pk, self.dn, msg_id, params), 1)
        return msg_id

    async def post_event(self, identifier: str, value: dict[str, Any]) -> str:
        assert self.client is not None
        msg_id = str(next(self._ids))
        await self.client.publish(*alink.event_post(self.pk, self.dn, msg_id, identifier, value), 1)
        return msg_id

    async def reply_to(self, msg_id: str, suffix: str, timeout: float = WAIT) -> alink.AlinkReply:
        got = await until(lambda: next((r for r in self.replies if r.id == msg_id and r.topic.endswith(suffix)),
                                       None), timeout)
        assert got is not None
        return got


async def until(probe: Callable[[], Any], timeout: float = WAIT, interval: float = 0.05) -> Any:
    """The first truthy ``probe()`` within ``timeout`` seconds (None if there is none)."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(interval)


async def retry(attempt: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = WAIT) -> Any:
    """``await attempt()`` until ``ok(result)`` or ``timeout`` seconds passed; the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = await attempt()
        if ok(result) or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.2)


async def call(sdk: OldSdk, action: str, **params: Any) -> dict[str, Any]:
    return await asyncio.to_thread(sdk.common, action, **params)


async def status(sdk: OldSdk, dev: Device) -> dict[str, Any]:
    return (await call(sdk, "QueryDeviceDetail", IotId=dev.iot_id))["Data"]


async def wait_status(sdk: OldSdk, dev: Device, want: str, timeout: float = WAIT) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        data = await status(sdk, dev)
        if data["Status"] == want or time.monotonic() > deadline:
            assert data["Status"] == want, data
            return data
        await asyncio.sleep(0.1)


async def invoke(sdk: OldSdk, dev: Device, identifier: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    return await call(sdk, "InvokeThingService", IotId=dev.iot_id, Identifier=identifier,
                      Args=json.dumps(args or {}))


class PresenceClient:
    """A plain MQTT client with the ``tester`` user: plays the broker's presence events."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.client = MqttClient()  # replaced on entry
        self.received: list[Publish] = []

    async def __aenter__(self) -> PresenceClient:
        self.client = MqttClient(on_message=self.received.append)
        await self.client.connect("127.0.0.1", self.port, client_id="tester-" + secrets.token_hex(3),
                                  username=TESTER_USER, password=TESTER_PASSWORD)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.disconnect()

    async def presence(self, dev: Device, event: str, **extra: Any) -> None:
        body = {"clientid": dev.client_id, "username": dev.username, "ts": int(time.time() * 1000), **extra}
        await self.client.publish(f"{PRESENCE}/{dev.client_id}/{event}", json.dumps(body).encode(), 1)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 120))


# --- tests ---------------------------------------------------------------------------------------------

def test_broker_url_parsing() -> None:
    u = parse_broker_url("mqtt://srv:p%40ss@broker.example:1884?presence=a/+/clients&client_id=node&resync=2")
    assert (u.host, u.port, u.tls, u.username, u.password, u.presence, u.client_id_prefix, u.resync_s) == \
        ("broker.example", 1884, False, "srv", "p@ss", "a/+/clients", "node", 2.0)
    assert u.ssl_context() is None and "p@ss" not in u.redacted()
    t = parse_broker_url("mqtts://broker.example", "user", "pw")
    assert (t.port, t.tls, t.username, t.password, t.presence) == (8883, True, "user", "pw", "$SYS/brokers/+/clients")
    assert t.ssl_context() is not None
    assert parse_broker_url("mqtt://h?presence=none").presence is None
    for bad in ("http://h", "mqtt://", "mqtt://h?presence=a/%23", "mqtt://h?bogus=1", "mqtt://h?resync=x",
                "mqtt://h:99999"):
        with pytest.raises(ExternalBrokerError):
            parse_broker_url(bad)
    assert isinstance(u, BrokerUrl)


def test_device_of_topics() -> None:
    assert device_of("/sys/a1Pk/cam0001/thing/event/property/post") == ("a1Pk", "cam0001")
    assert device_of("/ext/rrpc/123/sys/a1Pk/cam0001/thing/service/GetDeviceStatus") == ("a1Pk", "cam0001")
    assert device_of("/ota/device/inform/a1Pk/cam0001") == ("a1Pk", "cam0001")
    for other in ("/sys/a1Pk", "/sys/a-b/cam0001/x", "/sys/a1Pk/x/thing", "sys/a1Pk/cam0001/x",
                  "/a1Pk/cam0001/user/x",
                  "/ext/rrpc/1/a1Pk/cam0001/user/x", "$SYS/brokers/n/clients/c/connected"):
        assert device_of(other) is None, other


def test_posts_are_acknowledged_through_the_broker(cluster: Cluster) -> None:
    async def scenario() -> None:
        async with Device(cluster, "post0001") as dev:
            mid = await dev.post_properties({"FirmwareVersion": "2.0.1", "StatusLight": 1, "StorageStatus": 1})
            r = await dev.reply_to(mid, "/thing/event/property/post_reply")
            assert (r.code, r.data) == (200, {})
            mid = await dev.post_event("AlarmEvent", {"AlarmType": 1, "AlarmPicId": "pic-1"})
            r = await dev.reply_to(mid, "/thing/event/AlarmEvent/post_reply")
            assert r.code == 200
            mid = await dev.post_properties({"NoSuchProperty": 1})
            r = await dev.reply_to(mid, "/thing/event/property/post_reply")
            assert r.code != 200 and r.message
            mid = await dev.post_event("AlarmEvent", {"AlarmType": "loud"})
            assert (await dev.reply_to(mid, "/thing/event/AlarmEvent/post_reply")).code != 200

            async def light() -> Any:
                infos = (await call(cluster.a, "QueryDevicePropertyStatus", IotId=dev.iot_id)
                         )["Data"]["List"]["PropertyStatusInfo"]
                return {i["Identifier"]: i.get("Value") for i in infos}.get("StatusLight") == "1"

            deadline = time.monotonic() + WAIT
            while not await light():
                assert time.monotonic() < deadline, "QueryDevicePropertyStatus never showed StatusLight"
                await asyncio.sleep(0.1)
            assert (await status(cluster.a, dev))["FirmwareVersion"] == "2.0.1"

    run(scenario())


def test_presence_events_drive_status_and_calls(cluster: Cluster) -> None:
    async def scenario() -> None:
        async with Device(cluster, "pres0001") as dev, PresenceClient(cluster.broker.port) as tester:
            assert (await status(cluster.a, dev))["Status"] == "UNACTIVE"
            r = await invoke(cluster.a, dev, "GetDeviceStatus")
            assert (r["Success"], r["Code"], r["ErrorMessage"]) == (False, "466", "device status is initial.")

            await tester.presence(dev, "connected", ipaddress="10.9.8.7", proto_ver=4, connack=0)
            data = await wait_status(cluster.a, dev, "ONLINE")
            assert data["IpAddress"] == "10.9.8.7"
            for sdk in cluster.sdks:  # every node heard the presence, every node can call the device
                r = await invoke(sdk, dev, "GetDeviceStatus")
                assert r.get("Success", True) is not False, r
                assert json.loads(r["Data"]["Result"])["UptimeSeconds"] == 42
            r = await invoke(cluster.sdks[-1], dev, "StopVod")
            assert r["Data"]["MessageId"] and r["Data"]["Result"] == ""
            assert await until(lambda: any(getattr(c, "identifier", "") == "StopVod" for c in dev.calls))
            await call(cluster.a, "SetDeviceProperty", IotId=dev.iot_id, Items=json.dumps({"StatusLight": 0}))
            assert await until(lambda: any(isinstance(c, alink.PropertySet) and c.params == {"StatusLight": 0}
                                           for c in dev.calls))

            # A takeover's disconnect of the old connection does not take the device offline.
            await tester.presence(dev, "connected", ipaddress="10.9.8.8")
            await tester.presence(dev, "disconnected", reason="takenover")
            await asyncio.sleep(0.5)
            assert (await status(cluster.a, dev))["Status"] == "ONLINE"
            assert (await invoke(cluster.a, dev, "GetDeviceStatus")).get("Success", True) is not False

            await tester.presence(dev, "disconnected", reason="normal")
            await wait_status(cluster.a, dev, "OFFLINE")
            for sdk in cluster.sdks:  # every node heard it (each handles presence events itself)
                r = await retry(lambda: invoke(sdk, dev, "GetDeviceStatus"), lambda r: r.get("Success") is False)
                assert (r["Success"], r["Code"], r["ErrorMessage"]) == (False, "466", "device status is offline."), r

            # Once the broker reported presence for a device, its posts do not bring it back online.
            mid = await dev.post_properties({"StatusLight": 1})
            assert (await dev.reply_to(mid, "/thing/event/property/post_reply")).code == 200
            await asyncio.sleep(0.5)
            assert (await status(cluster.a, dev))["Status"] == "OFFLINE"

        for node in cluster.nodes:  # the cloud's own RRPC requests came back and were not taken as replies
            assert "bad uplink" not in node.log() and "Traceback" not in node.log()

    run(scenario())


def test_a_disabled_device_is_not_called_by_any_node(cluster: Cluster) -> None:
    """The broker keeps it connected (plain MQTT cannot kick), but no node calls it any more."""
    async def scenario() -> None:
        async with Device(cluster, "dis00001") as dev, PresenceClient(cluster.broker.port) as tester:
            await tester.presence(dev, "connected", ipaddress="10.1.1.1")
            await wait_status(cluster.a, dev, "ONLINE")
            for sdk in cluster.sdks:
                r = await retry(lambda: invoke(sdk, dev, "GetDeviceStatus"), lambda r: r.get("Success") is not False)
                assert r.get("Success") is not False, r
            await call(cluster.a, "DisableThing", IotId=dev.iot_id)
            for sdk in cluster.sdks:  # node A at once (kick), the others at their next resync; until then a
                # node may still call the device, and its reply may reach a node that drops a disabled
                # device's uplinks (the call times out): wait for the refusal itself
                r = await retry(lambda: invoke(sdk, dev, "GetDeviceStatus"),
                                lambda r: r.get("ErrorMessage") == "device status is disable.")
                assert (r["Success"], r["Code"], r["ErrorMessage"]) == (False, "466", "device status is disable."), r
            mid = await dev.post_properties({"StatusLight": 1})  # its posts are ignored
            await asyncio.sleep(1.0)
            assert not [r for r in dev.replies if r.id == mid]
        assert "cannot disconnect device" in cluster.nodes[0].log()

    run(scenario())


def test_a_device_that_publishes_is_online_without_presence_events(cluster: Cluster) -> None:
    async def scenario() -> None:
        async with Device(cluster, "fall0001") as dev:
            mid = await dev.post_properties({"StatusLight": 1})
            assert (await dev.reply_to(mid, "/thing/event/property/post_reply")).code == 200
            await wait_status(cluster.a, dev, "ONLINE")
            for sdk in cluster.sdks:  # the node that did not get the post learns it from the database
                r = await retry(lambda: invoke(sdk, dev, "GetDeviceStatus"), lambda r: r.get("Success") is not False)
                assert json.loads(r["Data"]["Result"])["FirmwareVersion"] == "2.0.1", r

    run(scenario())


def test_unknown_devices_and_junk_are_ignored(cluster: Cluster) -> None:
    async def scenario() -> None:
        async with PresenceClient(cluster.broker.port) as tester:
            await tester.client.subscribe([("/sys/a1Unknown00/nobody01/#", 1)])
            await tester.client.publish(*alink.property_post("a1Unknown00", "nobody01", "1", {"StatusLight": 1}), 1)
            await tester.client.publish(f"{PRESENCE}/x/connected", b"\xff not json", 1)
            await tester.client.publish(f"{PRESENCE}/y/connected",
                                        b'{"clientid":"y","username":"nobody01&a1Unknown00"}', 1)
            await tester.client.publish(f"{PRESENCE}/z/connected", b'{"clientid":"z","username":"no-amp"}', 1)
            await asyncio.sleep(1.0)
            replies = [m for m in tester.received if m.topic.endswith("_reply")]
            assert replies == []
        for node in cluster.nodes:
            assert "Traceback" not in node.log()
        async with Device(cluster, "junk0001") as dev:  # the nodes still work
            mid = await dev.post_properties({"StatusLight": 1})
            assert (await dev.reply_to(mid, "/thing/event/property/post_reply")).code == 200

    run(scenario())


def test_two_nodes_split_the_uplinks(cluster: Cluster) -> None:
    if len(cluster.nodes) < 2:
        pytest.skip("two nodes need PostgreSQL on the loopback")
    n = 30

    async def scenario() -> None:
        async with Device(cluster, "split001") as dev:
            ids = [await dev.post_properties({"StatusLight": i % 2}) for i in range(n)]
            ids += [await dev.post_event("AlarmEvent", {"AlarmType": 1}) for _ in range(n)]
            assert await until(lambda: len(dev.replies) >= 2 * n)
            await asyncio.sleep(1.0)  # no duplicates come late
            got = sorted(r.id for r in dev.replies)
            assert got == sorted(ids), "each post must be answered exactly once"
            assert all(r.code == 200 for r in dev.replies)
            return dev.pk, dev.dn

    pk, dn = run(scenario())
    # Mosquitto's log says which server client each post went to: both nodes got a share.
    topic = re.escape(f"/sys/{pk}/{dn}/thing/event/property/post")
    sent = re.findall(rf"Sending PUBLISH to (iotvideo-test-\w+) \([^)]*'{topic}'", cluster.broker.log())
    per_node = {c: sent.count(c) for c in set(sent)}
    assert len(sent) == n and len(per_node) == 2 and min(per_node.values()) > 0, per_node


def test_http_auth_and_acl_hooks(cluster: Cluster) -> None:
    async def scenario() -> None:
        async with Device(cluster, "hook0001") as dev:
            pass
        node = cluster.nodes[0]
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
            async def hook(path: str, body: Any) -> Any:
                r = await http.post(path, json=body)
                assert r.status_code == 200, r.text
                return r.json()

            good = {"clientid": dev.client_id, "username": dev.username, "password": dev.password,
                    "peerhost": "10.0.0.1"}
            assert await hook("/mqtt/auth", good) == {"result": "allow", "is_superuser": False}
            assert (await hook("/mqtt/auth", {**good, "password": "0" * 40}))["result"] == "deny"
            assert (await hook("/mqtt/auth", {**good, "clientid": "a1Unknown00&nobody01",
                                              "username": "nobody01&a1Unknown00"}))["result"] == "deny"
            other = {**good, "clientid": "a1Other&x|signmethod=hmacsha1|"}
            assert (await hook("/mqtt/auth", other))["result"] == "deny"
            server = {"clientid": "srv", "username": SERVER_USER, "password": SERVER_PASSWORD}
            assert await hook("/mqtt/auth", server) == {"result": "allow", "is_superuser": True}
            assert (await hook("/mqtt/auth", {"clientid": "srv", "username": SERVER_USER, "password": "x"})
                    )["result"] == "deny"
            assert (await hook("/mqtt/auth", {"username": dev.username}))["result"] == "deny"

            own = f"/sys/{dev.pk}/{dev.dn}"
            for action, topic, want in [
                ("publish", f"{own}/thing/event/property/post", "allow"),
                ("publish", f"/ext/rrpc/7/sys/{dev.pk}/{dev.dn}/thing/service/GetDeviceStatus", "allow"),
                ("publish", f"{own}/thing/service/GetDeviceStatus", "deny"),  # the cloud's request topic
                ("publish", f"/sys/{dev.pk}/other001/thing/event/property/post", "deny"),
                ("subscribe", f"{own}/#", "allow"),
                ("subscribe", "/sys/#", "deny"),
                ("subscribe", f"$share/g/{own}/#", "deny"),
            ]:
                got = await hook("/mqtt/acl", {"username": dev.username, "clientid": dev.client_id,
                                               "topic": topic, "action": action})
                assert got == {"result": want}, (action, topic)
            assert await hook("/mqtt/acl", {"username": SERVER_USER, "topic": "/sys/#", "action": "subscribe"}) \
                == {"result": "allow"}
            assert (await http.post("/mqtt/auth", content=b"not json")).status_code == 400

    run(scenario())


# --- in process: TLS, and a broker that is not there --------------------------------------------------

class FakeState:
    """The part of DeviceState the link and the external broker use, without a database."""

    def __init__(self, *creds: DeviceCredentials) -> None:
        self.creds = {(c.product_key, c.device_name): c for c in creds}
        self.online: dict[str, str] = {}
        self.properties: dict[str, Any] = {}

    async def credentials(self, pk: str, dn: str) -> DeviceCredentials | None:
        return self.creds.get((pk, dn))

    def mark_online(self, iot_id: str, ip: str) -> None:
        self.online[iot_id] = ip

    def mark_offline(self, iot_id: str) -> None:
        self.online.pop(iot_id, None)

    async def status(self, iot_id: str) -> str:
        return "ONLINE" if iot_id in self.online else "OFFLINE"

    async def save_properties(self, iot_id: str, params: dict[str, Any], _t: int) -> None:
        self.properties.update(params)

    async def set_firmware(self, iot_id: str, version: str) -> None:
        pass

    def forget(self, *_: object) -> None:
        pass


def external_settings(url: str, group: str = "inproc") -> Settings:
    return Settings(mqtt_mode="external", mqtt_broker_url=url, mqtt_broker_username=SERVER_USER,
                    mqtt_broker_password=SERVER_PASSWORD, mqtt_share_group=group)


def test_tls_broker_without_presence_events(broker: Mosquitto) -> None:
    """mqtts:// with the broker's CA; presence=none: a device is connected once it publishes."""
    pk, dn, secret, iot_id = "a1TlsPk0001", "tls00001", "tls-secret", "iot-tls-0001"
    state = FakeState(DeviceCredentials(iot_id, "t1", pk, dn, secret, True, "UNACTIVE"))
    link = DeviceLink(state, Bus(), rpc_timeout_s=3)  # type: ignore[arg-type]

    async def scenario() -> None:
        ext = ExternalBroker(external_settings(
            f"mqtts://localhost:{broker.tls_port}?ca={broker.ca_file}&presence=none&resync=0"), link)
        link.transport = ext
        await ext.start()
        try:
            assert ext.connected_to_broker
            assert not any("presence" in f or "$SYS" in f for f in ext.filters)
            async with Device(broker, dn, pk=pk, secret=secret, iot_id=iot_id, tls=True) as dev:
                assert not ext.is_connected(iot_id)
                with pytest.raises(BusinessError, match="offline"):
                    await link.call(Target(iot_id, pk, dn), "GetDeviceStatus", {})
                mid = await dev.post_properties({"StatusLight": 1})
                assert (await dev.reply_to(mid, "/thing/event/property/post_reply")).code == 200
                assert ext.is_connected(iot_id) and state.online == {iot_id: ""}
                assert await until(lambda: state.properties == {"StatusLight": 1})
                result = await link.call(Target(iot_id, pk, dn), "GetDeviceStatus", {})
                assert result.code == 200 and result.data["UptimeSeconds"] == 42
                result = await link.set_properties(Target(iot_id, pk, dn), {"StatusLight": 0}, wait=True)
                assert result.code == 200
                assert ext.kick(iot_id, "device disabled") is False and not ext.is_connected(iot_id)
        finally:
            await ext.stop()
        assert not ext.connected_to_broker and not ext.deliver(iot_id, "/x", b"")

    run(scenario())


def test_unreachable_broker_does_not_stop_the_server() -> None:
    link = DeviceLink(FakeState(), Bus())  # type: ignore[arg-type]

    async def scenario() -> None:
        ext = ExternalBroker(external_settings(f"mqtt://127.0.0.1:{free_port()}"), link, start_timeout=0.5)
        await ext.start()
        try:
            assert not ext.connected_to_broker
            assert ext.deliver("k", "/sys/a1Pk/dev00001/thing/service/X", b"{}") is False
        finally:
            await ext.stop()

    run(scenario())
    with pytest.raises(ExternalBrokerError):
        ExternalBroker(external_settings("mqtt://127.0.0.1:1", group="a/b"), link)
