"""The device link end to end with the official SDKs on both sides.

The device is a camera built on the official device SDK (``aliyun-iot-linkkit``, run by
``tests/peers/linkkit_device.py`` under its own interpreter, ``.venv-linkkit``); the cloud
side is called through the official cloud SDKs: ``alibabacloud_iot20180120`` (signed V3 and
'v2') and the old SDK's ``CommonRequest`` (V1). Everything goes through a real
``iotvideo serve`` per database backend (the ``server`` fixture).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alibabacloud_iot20180120 import models as iot
from alibabacloud_iot20180120.client import Client

from conftest import Key, OldSdk, ServerInfo, new_config
from iotvideo.devicelink import tsl

ROOT = Path(__file__).resolve().parent.parent
LINKKIT_PY = ROOT / ".venv-linkkit" / "bin" / "python"
PEER = ROOT / "tests" / "peers" / "linkkit_device.py"
TIMEOUT = 15.0
GMT = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

# Skipped only outside CI: there scripts/setup.sh must have made the SDK's interpreter.
pytestmark = pytest.mark.skipif(not LINKKIT_PY.exists() and not os.environ.get("CI"),
                                reason="the official device SDK's interpreter .venv-linkkit is missing (scripts/setup.sh)")


def wait_until(check: Callable[[], Any], timeout: float = TIMEOUT, what: str = "condition") -> Any:
    """Polls ``check`` until it returns something truthy; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")


class LinkkitDevice:
    """One linkkit camera process: its JSON-line events, and commands to it."""

    def __init__(self, server: ServerInfo, pk: str, dn: str, secret: str, tsl_file: Path) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [str(LINKKIT_PY), str(PEER), "--port", str(server.mqtt_port), "--product-key", pk,
             "--device-name", dn, "--device-secret", secret, "--tsl", str(tsl_file)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.events.append(ev)

    def seen(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e.get("kind") == kind
                    and all(e.get(k) == v for k, v in match.items())]

    def wait(self, kind: str, timeout: float = TIMEOUT, after: int = 0, **match: Any) -> dict[str, Any]:
        """The first event of ``kind`` (matching ``match``) among the events from index ``after`` on."""
        def found() -> dict[str, Any] | None:
            with self._lock:
                for e in self.events[after:]:
                    if e.get("kind") == kind and all(e.get(k) == v for k, v in match.items()):
                        return e
            if self.proc.poll() is not None and kind != "exit":
                pytest.fail(f"the device process exited (rc {self.proc.returncode}); events: {self.events}")
            return None
        return wait_until(found, timeout, f"device event {kind} {match or ''}")  # type: ignore[no-any-return]

    def mark(self) -> int:
        with self._lock:
            return len(self.events)

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def quit(self) -> None:
        self.send(cmd="quit")
        self.proc.wait(timeout=TIMEOUT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)


# --- fixtures -------------------------------------------------------------------------------


class Cloud:
    """One tenant with its official SDK clients and a camera product."""

    def __init__(self, server: ServerInfo, key: Key, tmp: Path) -> None:
        self.server = server
        self.key = key
        self.tmp = tmp
        self.new = Client(new_config(server, key, None))      # V3
        self.new_v2 = Client(new_config(server, key, "v2"))   # V1 signing through the new SDK
        self.old = OldSdk(server, key)
        body = self.new.create_product(iot.CreateProductRequest(product_name="cam-sdk", node_type=0)).body
        assert body.success is True, body
        self.pk = str(body.product_key)
        tsl_body = self.new.get_thing_model_tsl(iot.GetThingModelTslRequest(product_key=self.pk)).body
        assert tsl_body.success is True, tsl_body
        self.tsl_str = tsl_body.data.tsl_str
        self.tsl_file = tmp / f"tsl-{self.pk}.json"
        self.tsl_file.write_text(self.tsl_str, encoding="utf-8")

    def register(self, name: str | None = None) -> iot.RegisterDeviceResponseBodyData:
        body = self.new.register_device(iot.RegisterDeviceRequest(
            product_key=self.pk, device_name=name or "cam-" + secrets.token_hex(4))).body
        assert body.success is True, body
        return body.data

    def detail(self, iot_id: str) -> iot.QueryDeviceDetailResponseBodyData:
        body = self.new.query_device_detail(iot.QueryDeviceDetailRequest(iot_id=iot_id)).body
        assert body.success is True, body
        return body.data

    def status(self, iot_id: str) -> str:
        return str(self.detail(iot_id).status)

    def device(self, reg: iot.RegisterDeviceResponseBodyData, secret: str | None = None) -> LinkkitDevice:
        return LinkkitDevice(self.server, self.pk, reg.device_name, secret or reg.device_secret, self.tsl_file)

    def invoke(self, iot_id: str, identifier: str, args: dict[str, Any], client: Client | None = None):  # type: ignore[no-untyped-def]
        return (client or self.new).invoke_thing_service(iot.InvokeThingServiceRequest(
            iot_id=iot_id, identifier=identifier, args=json.dumps(args))).body


@pytest.fixture(scope="module")
def cloud(server: ServerInfo, tmp_path_factory: pytest.TempPathFactory) -> Cloud:
    return Cloud(server, server.new_key(), tmp_path_factory.mktemp("linkkit"))


@pytest.fixture(scope="module")
def camera(cloud: Cloud) -> Iterator[tuple[iot.RegisterDeviceResponseBodyData, LinkkitDevice]]:
    """One camera connected with its real secret for the module's tests."""
    reg = cloud.register()
    dev = cloud.device(reg)
    try:
        assert dev.wait("connect")["rc"] == 0
        dev.wait("thing_enable")
        wait_until(lambda: cloud.status(reg.iot_id) == "ONLINE", what="ONLINE")
        yield reg, dev
    finally:
        dev.kill()


def assert_refused(body: Any, message: str) -> None:
    """The seed's 466 business error, in a new-SDK body or an old-SDK dict."""
    if isinstance(body, dict):
        assert (body.get("Success"), str(body.get("Code")), body.get("ErrorMessage")) == (False, "466", message), body
        assert body.get("RequestId")
    else:
        assert (body.success, str(body.code), body.error_message) == (False, "466", message), body
        assert body.request_id


# --- tests ----------------------------------------------------------------------------------


def test_thing_model_tsl_parses_and_the_device_sdk_loads_it(cloud: Cloud) -> None:
    model = json.loads(cloud.tsl_str)
    assert model == tsl.thing_model(cloud.pk)
    assert model["profile"]["productKey"] == cloud.pk
    assert {s["identifier"] for s in model["services"]} >= {"set", "get", "ForceIFrame", "GetDeviceStatus"}
    # Through the old SDK too: the same document.
    old = cloud.old.common("GetThingModelTsl", ProductKey=cloud.pk)
    assert old["Success"] is True and json.loads(old["Data"]["TslStr"]) == model
    # linkkit's own thing_setup accepts it (returns 0) and learns its events and services.
    script = (
        "import sys, json\n"
        "from linkkit import linkkit\n"
        "lk = linkkit.LinkKit(host_name='127.0.0.1', product_key=sys.argv[2], device_name='cam-tsl',"
        " device_secret='x')\n"
        "rc = lk.thing_setup(sys.argv[1])\n"
        "print(json.dumps({'rc': rc}))\n")
    out = subprocess.run([str(LINKKIT_PY), "-c", script, str(cloud.tsl_file), cloud.pk],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"rc": 0}, out.stdout + out.stderr
    # A product of another tenant is not served.
    stranger = Client(new_config(cloud.server, cloud.server.new_key(), None))
    body = stranger.get_thing_model_tsl(iot.GetThingModelTslRequest(product_key=cloud.pk)).body
    assert body.success is False


def test_connected_device_is_online_with_times_and_address(cloud: Cloud, camera) -> None:  # type: ignore[no-untyped-def]
    reg, _ = camera
    d = cloud.detail(reg.iot_id)
    assert d.status == "ONLINE"
    assert d.ip_address == "127.0.0.1"
    assert GMT.fullmatch(d.gmt_online) and UTC.fullmatch(d.utc_online)
    assert GMT.fullmatch(d.gmt_active) and UTC.fullmatch(d.utc_active)
    assert d.utc_active >= d.utc_create
    # The list shows it too.
    info = cloud.new.query_device(iot.QueryDeviceRequest(product_key=cloud.pk, page_size=50)).body.data.device_info
    assert {i.iot_id: i.device_status for i in info}[reg.iot_id] == "ONLINE"


@pytest.mark.parametrize("sdk", ["new-v3", "new-v2", "old"])
def test_async_service_call_reaches_the_device(cloud: Cloud, camera, sdk: str) -> None:  # type: ignore[no-untyped-def]
    reg, dev = camera
    at = dev.mark()
    args = {"StreamType": 1 if sdk == "old" else 0}
    if sdk == "old":
        body = cloud.old.common("InvokeThingService", ProductKey=cloud.pk, DeviceName=reg.device_name,
                                Identifier="ForceIFrame", Args=json.dumps(args))
        assert body["Success"] is True, body
        message_id, result = body["Data"]["MessageId"], body["Data"]["Result"]
    else:
        body = cloud.invoke(reg.iot_id, "ForceIFrame", args, cloud.new if sdk == "new-v3" else cloud.new_v2)
        assert body.success is True, body
        message_id, result = body.data.message_id, body.data.result
    assert message_id and result in ("", None)
    got = dev.wait("service", after=at, identifier="ForceIFrame")
    assert got["params"] == args
    assert got["request_id"] == str(message_id)


@pytest.mark.parametrize("sdk", ["new", "old"])
def test_sync_service_call_returns_the_device_reply(cloud: Cloud, camera, sdk: str) -> None:  # type: ignore[no-untyped-def]
    reg, dev = camera
    at = dev.mark()
    if sdk == "old":
        body = cloud.old.common("InvokeThingService", IotId=reg.iot_id, Identifier="GetDeviceStatus", Args="{}")
        assert body["Success"] is True, body
        message_id, result = body["Data"]["MessageId"], body["Data"]["Result"]
    else:
        body = cloud.invoke(reg.iot_id, "GetDeviceStatus", {})
        assert body.success is True, body
        message_id, result = body.data.message_id, body.data.result
    assert message_id
    assert json.loads(result) == {"Status": "ok"}  # what the device answered
    assert dev.wait("service", after=at, identifier="GetDeviceStatus")["params"] == {}


def test_invalid_service_arguments_never_reach_the_device(cloud: Cloud, camera) -> None:  # type: ignore[no-untyped-def]
    reg, dev = camera
    at = dev.mark()
    for identifier, args in (("ForceIFrame", {"StreamType": 7}), ("ForceIFrame", {}), ("NoSuchService", {})):
        body = cloud.invoke(reg.iot_id, identifier, args)
        assert body.success is False and body.code == "460", body
    # The next valid call is the first thing the device hears.
    assert cloud.invoke(reg.iot_id, "ForceIFrame", {"StreamType": 0}).success is True
    dev.wait("service", after=at, identifier="ForceIFrame")
    assert [e["identifier"] for e in dev.seen("service")[-1:]] == ["ForceIFrame"]
    assert all(e["params"] == {"StreamType": 0} for e in dev.events[at:] if e.get("kind") == "service")


def test_set_device_property_reaches_the_device(cloud: Cloud, camera) -> None:  # type: ignore[no-untyped-def]
    reg, dev = camera
    at = dev.mark()
    body = cloud.new.set_device_property(iot.SetDevicePropertyRequest(
        iot_id=reg.iot_id, items=json.dumps({"AlarmSwitch": 0, "DayNightMode": 2}))).body
    assert body.success is True and body.data.message_id, body
    assert dev.wait("property_set", after=at)["params"] == {"AlarmSwitch": 0, "DayNightMode": 2}
    # A read-only property cannot be set.
    body = cloud.new.set_device_property(iot.SetDevicePropertyRequest(
        iot_id=reg.iot_id, items=json.dumps({"FirmwareVersion": "9"}))).body
    assert body.success is False and body.code == "460", body


def test_property_and_event_posts_are_acknowledged_and_kept(cloud: Cloud, camera) -> None:  # type: ignore[no-untyped-def]
    reg, dev = camera
    version = "2.4." + str(secrets.randbelow(1000))
    at = dev.mark()
    dev.send(cmd="post_property", params={"FirmwareVersion": version, "StorageStatus": 1,
                                          "StorageTotalCapacity": 30436.5, "AlarmSwitch": 1})
    assert dev.wait("sent", after=at, what="property")["rc"] == 0
    reply = dev.wait("property_post_reply", after=at)
    assert (reply["code"], reply["message"]) == (200, "success")
    at = dev.mark()
    dev.send(cmd="event", identifier="AlarmEvent", value={"AlarmType": 1, "AlarmPicId": "", "Data": "{}"})
    assert dev.wait("sent", after=at, what="event")["rc"] == 0
    reply = dev.wait("event_post_reply", after=at)
    assert (reply["event"], reply["code"]) == ("AlarmEvent", 200)
    # An event that breaks the thing model is answered with an error code.
    at = dev.mark()
    dev.send(cmd="event", identifier="AlarmEvent", value={"AlarmType": 99})
    reply = dev.wait("event_post_reply", after=at)
    assert reply["code"] == 460 and "AlarmType" in reply["message"]
    # The console sees the firmware and the values.
    wait_until(lambda: cloud.detail(reg.iot_id).firmware_version == version, what="FirmwareVersion")
    status = cloud.new.query_device_property_status(
        iot.QueryDevicePropertyStatusRequest(iot_id=reg.iot_id)).body
    assert status.success is True, status
    values = {p.identifier: p for p in status.data.list.property_status_info}
    assert set(values) == set(tsl.PROPERTIES)
    assert values["FirmwareVersion"].value == version
    assert values["StorageStatus"].value == "1"
    assert float(values["StorageTotalCapacity"].value) == 30436.5
    assert values["AlarmSwitch"].value == "1" and values["AlarmSwitch"].data_type == "bool"
    assert values["FirmwareVersion"].time and int(values["FirmwareVersion"].time) > 1_600_000_000_000
    assert values["DayNightMode"].value is None  # never posted
    old = cloud.old.common("QueryDevicePropertyStatus", IotId=reg.iot_id)
    assert {p["Identifier"]: p.get("Value") for p in old["Data"]["List"]["PropertyStatusInfo"]}[
        "FirmwareVersion"] == version


def test_wrong_secret_is_refused(cloud: Cloud) -> None:
    reg = cloud.register()
    dev = cloud.device(reg, secret=secrets.token_hex(16))
    try:
        # The server refuses and says so in its log, naming the device; the SDK retries and is
        # refused again; it never reports a successful connect.
        def refusals() -> list[str]:
            return [ln for ln in cloud.server.log().splitlines()
                    if "mqtt connect refused" in ln and f"{reg.device_name}&{cloud.pk}" in ln]

        wait_until(lambda: len(refusals()) >= 2, what="two refused attempts in the server log")
        assert all("code=4" in ln and "bad password" in ln for ln in refusals()), refusals()
        assert all(e["rc"] != 0 for e in dev.seen("connect"))
        assert not dev.seen("thing_enable")
        d = cloud.detail(reg.iot_id)
        assert d.status == "UNACTIVE" and not d.gmt_active and not d.gmt_online
        assert_refused(cloud.invoke(reg.iot_id, "ForceIFrame", {"StreamType": 0}), "device status is initial.")
    finally:
        dev.kill()


def test_device_that_leaves_goes_offline_and_calls_get_466(cloud: Cloud) -> None:
    reg = cloud.register()
    dev = cloud.device(reg)
    try:
        assert dev.wait("connect")["rc"] == 0
        wait_until(lambda: cloud.status(reg.iot_id) == "ONLINE", what="ONLINE")
        dev.quit()
        wait_until(lambda: cloud.status(reg.iot_id) == "OFFLINE", what="OFFLINE")
    finally:
        dev.kill()
    d = cloud.detail(reg.iot_id)
    assert d.gmt_online and d.gmt_active and d.ip_address == "127.0.0.1"  # when it was last seen
    assert_refused(cloud.invoke(reg.iot_id, "ForceIFrame", {"StreamType": 0}), "device status is offline.")
    assert_refused(cloud.invoke(reg.iot_id, "GetDeviceStatus", {}, cloud.new_v2), "device status is offline.")
    assert_refused(cloud.old.common("InvokeThingService", IotId=reg.iot_id, Identifier="ForceIFrame",
                                    Args='{"StreamType":0}'), "device status is offline.")
    assert_refused(cloud.old.common("SetDeviceProperty", IotId=reg.iot_id, Items='{"AlarmSwitch":1}'),
                   "device status is offline.")


def test_never_connected_and_disabled_devices_get_466(cloud: Cloud) -> None:
    reg = cloud.register()
    assert_refused(cloud.invoke(reg.iot_id, "ForceIFrame", {"StreamType": 0}), "device status is initial.")
    assert_refused(cloud.old.common("InvokeThingService", ProductKey=cloud.pk, DeviceName=reg.device_name,
                                    Identifier="GetDeviceStatus", Args="{}"), "device status is initial.")
    assert cloud.new.disable_thing(iot.DisableThingRequest(iot_id=reg.iot_id)).body.success is True
    assert_refused(cloud.invoke(reg.iot_id, "ForceIFrame", {"StreamType": 0}), "device status is disable.")
    assert_refused(cloud.old.common("InvokeThingService", IotId=reg.iot_id, Identifier="ForceIFrame",
                                    Args='{"StreamType":0}'), "device status is disable.")
    assert_refused(cloud.old.common("SetDeviceProperty", IotId=reg.iot_id, Items='{"AlarmSwitch":1}'),
                   "device status is disable.")


def test_disable_kicks_the_device_and_enable_lets_it_back(cloud: Cloud) -> None:
    reg = cloud.register()
    dev = cloud.device(reg)
    try:
        assert dev.wait("connect")["rc"] == 0
        wait_until(lambda: cloud.status(reg.iot_id) == "ONLINE", what="ONLINE")
        at = dev.mark()
        assert cloud.new.disable_thing(iot.DisableThingRequest(iot_id=reg.iot_id)).body.success is True
        dev.wait("disconnect", after=at)
        assert cloud.status(reg.iot_id) == "DISABLE"
        assert_refused(cloud.invoke(reg.iot_id, "ForceIFrame", {"StreamType": 0}), "device status is disable.")
        # The SDK keeps reconnecting; each attempt is refused and the status stays DISABLE.
        wait_until(lambda: any("mqtt connect refused" in ln and f"{reg.device_name}&{cloud.pk}" in ln
                               and "code=5" in ln for ln in cloud.server.log().splitlines()),
                   what="a refused reconnect")
        assert not dev.seen("connect", rc=0)[1:]
        assert cloud.status(reg.iot_id) == "DISABLE"
        # Enabled again, it comes back by itself.
        at = dev.mark()
        assert cloud.new.enable_thing(iot.EnableThingRequest(iot_id=reg.iot_id)).body.success is True
        dev.wait("connect", after=at, rc=0)
        wait_until(lambda: cloud.status(reg.iot_id) == "ONLINE", what="ONLINE again")
        assert cloud.invoke(reg.iot_id, "ForceIFrame", {"StreamType": 0}).success is True
        dev.wait("service", after=at, identifier="ForceIFrame")
    finally:
        dev.kill()
