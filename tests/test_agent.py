"""The device agent (``iotvideo camera``) against the real server, both backends.

The agent runs in-process (its own event loop in a thread, ``CameraAgent.run`` as a task) and once
as the ``iotvideo camera`` subprocess; the cloud side is driven through the official old SDK
(``InvokeThingService``, ``SetDeviceProperty``, ``QueryDeviceDetail`` …).  ``InvokeThingService``
does not wait for an async service's reply, so what a camera answered to a media service is
observed on the camera's side: ``CameraAgent.replies`` in-process, its log for the subprocess.
Malformed downlinks cannot be sent through the server (it validates every call), so they are fed to
``CameraAgent.handle_downlink`` directly.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from conftest import OldSdk, ServerInfo
from iotvideo.agent import MEDIA_SERVICES, CameraAgent, NotSupported, UnsupportedMedia, redact_source
from iotvideo.devicelink import alink, tsl
from iotvideo.devicelink.mqtt import Publish
from iotvideo.devicelink.mqtt.client import MqttConnectError

T = TypeVar("T")

URL = "rtmp://127.0.0.1:9/live/test?token=x"  # nothing listens: a push fails at once
MEDIA_ARGS: dict[str, dict[str, Any]] = {
    "StartPushStreaming": {"PushUrl": URL, "StreamType": 0},
    "StopPushStreaming": {"StreamType": 0},
    "ForceIFrame": {"StreamType": 1},
    "TriggerPicCapture": {"UploadUrl": "http://127.0.0.1/upload", "CaptureId": "cap-1"},
    "StartTriggerRecord": {"RecordId": "rec-1", "StreamType": 0, "RecordSeconds": 10, "PushUrl": URL},
    "StopTriggerRecord": {"RecordId": "rec-1"},
    "QueryRecordList": {"BeginTime": 0, "EndTime": 100},
    "QueryMonthRecord": {"Month": "202401"},
    "StartVod": {"FileName": "a.mp4", "PushUrl": URL},
    "StartVodByTime": {"BeginTime": 0, "EndTime": 100, "PushUrl": URL},
    "StopVod": {},
}


def wait_until(fn: Callable[[], T], what: str, timeout: float = 10.0, interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what} (last: {value!r})")
        time.sleep(interval)


def ok(body: dict[str, Any]) -> Any:
    assert body.get("Success") is True, body
    return body.get("Data")


def make_camera(old_sdk: OldSdk) -> dict[str, str]:
    pk = ok(old_sdk.common("CreateProduct", ProductName="agent-" + secrets.token_hex(3)))["ProductKey"]
    d = ok(old_sdk.common("RegisterDevice", ProductKey=pk, DeviceName="cam-" + secrets.token_hex(4)))
    return {"IotId": d["IotId"], "ProductKey": pk, "DeviceName": d["DeviceName"], "DeviceSecret": d["DeviceSecret"]}


def detail(old_sdk: OldSdk, cam: dict[str, str]) -> dict[str, Any]:
    return ok(old_sdk.common("QueryDeviceDetail", IotId=cam["IotId"]))


def status_is(old_sdk: OldSdk, cam: dict[str, str], status: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        d = detail(old_sdk, cam)
        return d if d["Status"] == status else None
    return check


def properties(old_sdk: OldSdk, cam: dict[str, str]) -> dict[str, str]:
    data = ok(old_sdk.common("QueryDevicePropertyStatus", IotId=cam["IotId"]))
    return {p["Identifier"]: p["Value"] for p in data["List"]["PropertyStatusInfo"] if "Value" in p}


def invoke(old_sdk: OldSdk, cam: dict[str, str], identifier: str, args: dict[str, Any]) -> dict[str, Any]:
    return old_sdk.common("InvokeThingService", IotId=cam["IotId"], Identifier=identifier, Args=json.dumps(args))


class AgentThread:
    """An event loop in a thread running ``CameraAgent.run`` as a task (tests call the SDK synchronously)."""

    def __init__(self, agent: CameraAgent) -> None:
        self.agent = agent
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="camera-agent", daemon=True)
        self.thread.start()
        self.task = asyncio.run_coroutine_threadsafe(agent.run(), self.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        try:
            self.call(self.agent.stop(), timeout=10)
            self.task.result(timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


@contextmanager
def running_agent(server: ServerInfo, cam: dict[str, str], **options: Any) -> Iterator[AgentThread]:
    agent = CameraAgent("127.0.0.1", server.mqtt_port, cam["ProductKey"], cam["DeviceName"], cam["DeviceSecret"],
                        backoff_min=0.2, backoff_max=1.0, **options)
    runner = AgentThread(agent)
    try:
        yield runner
    finally:
        runner.close()


def answer_for(agent: CameraAgent, msg_id: str) -> Callable[[], Any]:
    return lambda: next((a for a in list(agent.replies) if a.msg_id == msg_id), None)


# --- in-process agent against the server ----------------------------------------------------------

def test_agent_in_process(server: ServerInfo, old_sdk: OldSdk) -> None:
    cam = make_camera(old_sdk)
    assert detail(old_sdk, cam)["Status"] == "UNACTIVE"
    with running_agent(server, cam, firmware="1.2.3") as runner:
        agent = runner.agent
        d = wait_until(status_is(old_sdk, cam, "ONLINE"), "the camera to be ONLINE")
        d = wait_until(lambda: (x := detail(old_sdk, cam))["FirmwareVersion"] == "1.2.3" and x, "its firmware")
        assert d["IpAddress"] == "127.0.0.1" and d["GmtOnline"]
        # every property it posted is kept by the cloud
        props = wait_until(lambda: (p := properties(old_sdk, cam)).get("MotionDetectSensitivity") and p,
                           "the posted properties")
        assert props["FirmwareVersion"] == "1.2.3"
        assert (props["StorageStatus"], props["AlarmSwitch"], props["StreamVideoQuality"]) == ("0", "1", "2")
        assert set(props) == set(tsl.PROPERTIES)
        assert agent.counters["property_posts_acked"] >= 1

        # GetDeviceStatus (sync, RRPC): real data through the API
        body = ok(invoke(old_sdk, cam, "GetDeviceStatus", {}))
        status = json.loads(body["Result"])
        assert status["FirmwareVersion"] == "1.2.3" and status["Source"] == "virtual"
        assert status["StorageStatus"] == 0 and status["StreamsPushing"] == 0
        assert 0 <= status["UptimeSeconds"] <= time.time() - agent.started_at + 1
        assert abs(status["ConnectedSince"] - time.time()) < 60
        assert body["MessageId"]

        # every media service: accepted by the cloud (async: not waited for) and answered by the
        # camera: live pushing is real (a push to a URL that refuses it fails with 500), the
        # recording/SD-card services answer 501 until they are built
        assert set(MEDIA_SERVICES) == set(tsl.SERVICES) - {"GetDeviceStatus"}
        live = {"StartPushStreaming": alink.CODE_SYSTEM_ERROR, "StopPushStreaming": alink.CODE_OK,
                "ForceIFrame": alink.CODE_OK}
        for identifier, args in MEDIA_ARGS.items():
            body = ok(invoke(old_sdk, cam, identifier, args))
            answer = wait_until(answer_for(agent, body["MessageId"]), f"the camera's answer to {identifier}")
            assert answer.identifier == identifier
            assert answer.code == live.get(identifier, alink.CODE_NOT_SUPPORTED), (identifier, answer)
            if identifier not in live:
                assert f"{identifier} is not supported by this device" in answer.message

        # SetDeviceProperty reaches the camera, which re-posts; the cloud shows the new value
        posts = agent.counters["property_posts_acked"]
        body = ok(old_sdk.common("SetDeviceProperty", IotId=cam["IotId"],
                                 Items=json.dumps({"AlarmSwitch": 0, "DayNightMode": 1})))
        answer = wait_until(answer_for(agent, body["MessageId"]), "the camera's property-set reply")
        assert (answer.identifier, answer.code) == ("property.set", 200)
        assert agent.properties["AlarmSwitch"] == 0 and agent.properties["DayNightMode"] == 1
        wait_until(lambda: properties(old_sdk, cam).get("AlarmSwitch") == "0", "AlarmSwitch 0 in the cloud")
        assert properties(old_sdk, cam)["DayNightMode"] == "1"
        assert agent.counters["property_posts_acked"] > posts

        # an alarm on demand is acknowledged by the cloud
        before = agent.counters["alarm_events_acked"]
        runner.call(agent.raise_alarm(2, "door"))
        wait_until(lambda: agent.counters["alarm_events_acked"] > before, "the AlarmEvent acknowledgement")
        assert agent.counters["posts_refused"] == 0 and agent.counters["malformed_downlinks"] == 0
        with pytest.raises(ValueError):
            runner.call(agent.raise_alarm(99))
    wait_until(status_is(old_sdk, cam, "OFFLINE"), "the camera to be OFFLINE after stop")


def test_agent_simulated_motion_and_reconnect(server: ServerInfo, old_sdk: OldSdk) -> None:
    cam = make_camera(old_sdk)
    with running_agent(server, cam, simulate_motion_every=1.0) as runner:
        agent = runner.agent
        wait_until(status_is(old_sdk, cam, "ONLINE"), "the camera to be ONLINE")
        wait_until(lambda: agent.counters["alarm_events_acked"] >= 2, "two simulated AlarmEvents acknowledged",
                   timeout=6)

        # disabled: the server drops the connection, and refuses the reconnects (CONNACK 5) with backoff
        refusals = re.compile(r"mqtt connect refused .*code=5 reason=device disabled")
        refused_before = len(refusals.findall(server.log()))
        ok(old_sdk.common("DisableThing", IotId=cam["IotId"]))
        wait_until(lambda: not agent.is_connected, "the camera to be disconnected")
        wait_until(lambda: isinstance(e := agent.link.last_error, MqttConnectError) and e.return_code == 5,
                   "a refused reconnect (not authorised)", timeout=5)
        assert detail(old_sdk, cam)["Status"] == "DISABLE"
        assert agent.counters["connects"] == 1 and agent.counters["disconnects"] == 1
        time.sleep(1.2)
        assert not agent.is_connected and detail(old_sdk, cam)["Status"] == "DISABLE"
        # the server saw the refused attempts, spaced by the backoff (not a hot loop)
        refused = len(refusals.findall(server.log())) - refused_before
        assert 1 <= refused <= 10, refused

        # enabled again: the agent comes back by itself, reports again, and alarms flow again
        ok(old_sdk.common("EnableThing", IotId=cam["IotId"]))
        wait_until(status_is(old_sdk, cam, "ONLINE"), "the camera to be ONLINE again", timeout=10)
        wait_until(lambda: agent.counters["connects"] == 2, "the agent's second connection")
        acked = agent.counters["alarm_events_acked"]
        wait_until(lambda: agent.counters["alarm_events_acked"] > acked, "an AlarmEvent after the reconnect", 5)

        # AlarmSwitch off: the simulated motion stops posting
        ok(old_sdk.common("SetDeviceProperty", IotId=cam["IotId"], Items=json.dumps({"AlarmSwitch": 0})))
        wait_until(lambda: agent.counters["alarms_suppressed"] >= 1, "a suppressed simulated alarm", 5)
        posted = agent.counters["alarm_events_posted"]
        time.sleep(1.2)
        assert agent.counters["alarm_events_posted"] == posted


# --- the iotvideo camera command ------------------------------------------------------------------

def test_camera_command(server: ServerInfo, old_sdk: OldSdk, tmp_path: Path) -> None:
    cam = make_camera(old_sdk)
    log_path = tmp_path / "camera.log"
    cmd = [sys.executable, "-m", "iotvideo.cli", "camera", "--server", "127.0.0.1",
           "--mqtt-port", str(server.mqtt_port), "--product-key", cam["ProductKey"],
           "--device-name", cam["DeviceName"], "--device-secret", cam["DeviceSecret"],
           "--source", "rtsp://admin:hunter2@127.0.0.1:9/stream1", "--firmware", "2.0.1",
           "--simulate-motion-every", "1"]
    env = {k: v for k, v in os.environ.items() if k != "IOTVIDEO_DEVICE_SECRET"}
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        def log() -> str:
            return log_path.read_text(errors="replace")

        wait_until(status_is(old_sdk, cam, "ONLINE"), "the camera command to be ONLINE", timeout=15)
        wait_until(lambda: detail(old_sdk, cam)["FirmwareVersion"] == "2.0.1", "its firmware")
        status = json.loads(ok(invoke(old_sdk, cam, "GetDeviceStatus", {}))["Result"])
        assert status["FirmwareVersion"] == "2.0.1"
        assert status["Source"] == "rtsp://***@127.0.0.1:9/stream1"  # reported, without the credentials

        message_id = ok(invoke(old_sdk, cam, "StartPushStreaming", MEDIA_ARGS["StartPushStreaming"]))["MessageId"]
        line = wait_until(lambda: re.search(rf"answered StartPushStreaming id={message_id}: (\d+) (.*)", log()),
                          "the camera's answer in its log")
        assert line.group(1) == "500"  # the relay source (a closed loopback port) cannot be opened
        wait_until(lambda: re.search(r"AlarmEvent id=\d+ acknowledged", log()),
                   "a simulated AlarmEvent acknowledged", timeout=6)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        wait_until(status_is(old_sdk, cam, "OFFLINE"), "the camera to be OFFLINE after SIGTERM")
        text = log()
        assert "connected to 127.0.0.1" in text and "service call GetDeviceStatus" in text
        assert cam["DeviceSecret"] not in text and "hunter2" not in text
        assert "Traceback" not in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


def test_camera_command_over_tls(tmp_path: Path) -> None:
    """``--tls`` (securemode=2) with ``--ca-file`` against the server's TLS port."""
    from test_devicelink_tls import self_signed

    from conftest import free_port, start_server, stop_server

    cert, key = self_signed(tmp_path)
    tls_port = free_port()
    srv = start_server("sqlite", tmp_path / "data", extra_env={
        "IOTVIDEO_TLS_CERT": str(cert), "IOTVIDEO_TLS_KEY": str(key), "IOTVIDEO_MQTT_TLS_PORT": str(tls_port)})
    proc: subprocess.Popen[bytes] | None = None
    try:
        sdk = OldSdk(srv, srv.new_key())
        cam = make_camera(sdk)
        env = {**os.environ, "IOTVIDEO_DEVICE_SECRET": cam["DeviceSecret"]}  # the secret kept off the command line
        proc = subprocess.Popen([sys.executable, "-m", "iotvideo.cli", "camera", "--server", "localhost",
                                 "--mqtt-port", str(tls_port), "--tls", "--ca-file", str(cert),
                                 "--product-key", cam["ProductKey"], "--device-name", cam["DeviceName"]],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        wait_until(status_is(sdk, cam, "ONLINE"), "the camera to be ONLINE over TLS", timeout=15)
        assert json.loads(ok(invoke(sdk, cam, "GetDeviceStatus", {}))["Result"])["FirmwareVersion"] == "1.0.0"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert cam["DeviceSecret"].encode() not in err
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        stop_server(srv)


def test_camera_command_refuses_bad_options(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from iotvideo.cli import app

    base = ["camera", "--server", "127.0.0.1", "--product-key", "a1TestPk001", "--device-name", "cam0001",
            "--device-secret", "s3cr3t"]
    runner = CliRunner()
    for extra, hint in [(["--source", str(tmp_path / "missing.mp4")], "--source"),
                        (["--ca-file", str(tmp_path)], "--ca-file"),
                        (["--simulate-motion-every", "0"], "--simulate-motion-every"),
                        (["--firmware", "x" * 65], "--firmware")]:
        result = runner.invoke(app, base + extra)
        assert result.exit_code == 2, (extra, result.output)
        assert hint in result.output
    result = runner.invoke(app, [*base[:5], "--device-name", "c", *base[7:]])
    assert result.exit_code == 2 and "--device-name" in result.output


# --- downlink handling without a server ------------------------------------------------------------

class PushingMedia(UnsupportedMedia):
    """A backend that implements one service, as the media work will."""

    def __init__(self) -> None:
        super().__init__("virtual")
        self.pushing = 0

    async def start_push_streaming(self, args: dict[str, Any]) -> dict[str, Any]:
        self.pushing += 1
        return {"Code": 0}

    def streams_pushing(self) -> int:
        return self.pushing


def offline_agent(**options: Any) -> tuple[CameraAgent, list[tuple[str, dict[str, Any]]]]:
    """An agent that never connects; what it publishes is collected as (topic, payload)."""
    agent = CameraAgent("127.0.0.1", 1, "a1TestPk001", "cam0001", "s3cr3t", **options)
    sent: list[tuple[str, dict[str, Any]]] = []

    async def publish(topic: str, payload: bytes, *, client: Any = None) -> None:
        sent.append((topic, orjson.loads(payload)))

    agent._publish = publish  # type: ignore[method-assign]
    return agent, sent


def test_downlinks_are_answered_never_crash() -> None:
    agent, sent = offline_agent(media=PushingMedia())
    p = "/sys/a1TestPk001/cam0001/thing/service/"
    rrpc = "/ext/rrpc/777/sys/a1TestPk001/cam0001/thing/service/GetDeviceStatus"

    async def go() -> None:
        h = agent.handle_downlink
        # unanswerable (no readable id): logged and dropped
        assert await h(p + "StartVod", b"\xff\xfe not json") is None
        assert await h(p + "StartVod", b'{"params":{}}') is None
        assert await h(p + "property/set", b"[1,2]") is None
        assert sent == []
        # RRPC: the topic carries the id, so even garbage is answered on the same topic
        await h(rrpc, b"{oops")
        assert sent[-1][0] == rrpc and sent[-1][1]["code"] == alink.CODE_NOT_JSON and sent[-1][1]["id"] == "777"
        await h(rrpc, b'{"id":"777","params":{}}')
        assert sent[-1][0] == rrpc and sent[-1][1]["code"] == 200
        assert sent[-1][1]["data"]["FirmwareVersion"] == "1.0.0"
        # params not an object; an unknown service; bad arguments
        await h(p + "StartVod", b'{"id":"1","params":[]}')
        assert sent[-1][0] == p + "StartVod_reply" and sent[-1][1]["code"] == 460 and sent[-1][1]["id"] == "1"
        await h(p + "Reboot", b'{"id":"2","params":{}}')
        assert sent[-1][0] == p + "Reboot_reply" and sent[-1][1]["code"] == 6321
        await h(p + "StartPushStreaming", b'{"id":"3","params":{"StreamType":5}}')
        assert sent[-1][1]["code"] == 460 and "PushUrl" in sent[-1][1]["message"]
        # a plugged-in backend's service works, the others still answer 501
        await h(p + "StartPushStreaming", orjson.dumps({"id": "4", "params": MEDIA_ARGS["StartPushStreaming"]}))
        assert sent[-1][1]["code"] == 200 and sent[-1][1]["data"] == {"Code": 0}
        assert agent.status()["StreamsPushing"] == 1
        await h(p + "StopVod", b'{"id":"5","params":{}}')
        assert sent[-1][1]["code"] == 501 and "StopVod is not supported" in sent[-1][1]["message"]
        # property set: read-only or unknown refused whole; valid applied, answered, re-posted
        n = len(sent)
        await h(p + "property/set", b'{"id":"6","params":{"AlarmSwitch":0,"FirmwareVersion":"9"}}')
        assert sent[-1][1]["code"] == 460 and len(sent) == n + 1 and agent.properties["AlarmSwitch"] == 1
        await h(p + "property/set", b'{"id":"7","params":{"Nope":1}}')
        assert sent[-1][1]["code"] == 6321
        await h(p + "property/set", b'{"id":"8","params":{"AlarmSwitch":false,"StatusLight":0}}')
        assert sent[-2] == (p + "property/set_reply", {"id": "8", "code": 200, "data": {}, "message": "success",
                                                       "version": "1.0"})
        assert sent[-1][0] == "/sys/a1TestPk001/cam0001/thing/event/property/post"
        assert sent[-1][1]["params"] == {"AlarmSwitch": 0, "StatusLight": 0}
        # property get
        await h(p + "property/get", b'{"id":"9","params":["AlarmSwitch","StorageStatus"]}')
        assert sent[-1][0] == p + "property/get_reply" and sent[-1][1]["data"] == {"AlarmSwitch": 0, "StorageStatus": 0}
        await h(p + "property/get", b'{"id":"10","params":"x"}')
        assert sent[-1][1]["code"] == 460
        # replies and foreign or unknown topics: never answered
        n = len(sent)
        assert await h(p + "StartVod_reply", b"garbage") is None
        assert await h("/sys/a1TestPk001/other01/thing/service/StartVod", b'{"id":"1","params":{}}') is None
        assert await h("/ota/device/upgrade/a1TestPk001/cam0001", b"{}") is None
        assert len(sent) == n

    asyncio.run(go())
    assert agent.counters["malformed_downlinks"] >= 6


class StalledMedia(PushingMedia):
    """A backend whose push never finishes starting: it records whether it was cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.started = 0
        self.cancelled = 0

    async def start_push_streaming(self, args: dict[str, Any]) -> dict[str, Any]:
        self.started += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return {"Code": 0}


def test_no_downlink_handler_outlives_the_agent() -> None:
    """A request in hand when the agent stops is cancelled and awaited by ``stop``; one that
    arrives while its link closes, or after, is not taken on."""
    media = StalledMedia()
    agent, sent = offline_agent(media=media)
    topic = "/sys/a1TestPk001/cam0001/thing/service/StartPushStreaming"
    payload = orjson.dumps({"id": "1", "params": MEDIA_ARGS["StartPushStreaming"]})

    def downlink() -> None:
        agent._on_message(Publish(topic=topic, payload=payload))

    async def go() -> None:
        agent.start()
        downlink()
        await asyncio.sleep(0.05)
        assert media.started == 1
        close = agent.link.close

        async def close_while_a_request_arrives() -> None:
            await close()
            downlink()  # (delivered while the link closes)

        agent.link.close = close_while_a_request_arrives  # type: ignore[method-assign]
        await agent.stop()
        assert not agent._tasks
        assert media.started == media.cancelled
        downlink()
        await asyncio.sleep(0.05)
        assert not agent._tasks and media.started == media.cancelled
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert pending == [], pending

    asyncio.run(go())
    assert sent == []  # nothing was answered: every request was cancelled


def test_default_backend_refuses_every_media_service() -> None:
    backend = UnsupportedMedia("rtsp://u:p@cam.local/live")

    async def go() -> None:
        for identifier, method in MEDIA_SERVICES.items():
            with pytest.raises(NotSupported) as e:
                await getattr(backend, method)(MEDIA_ARGS[identifier])
            assert e.value.code == 501 and identifier in e.value.message and "u:p" not in e.value.message

    asyncio.run(go())
    assert redact_source("rtsp://u:p@cam.local:554/live") == "rtsp://***@cam.local:554/live"
    assert redact_source("/videos/a.mp4") == "/videos/a.mp4"


def test_agent_password_follows_the_protocol() -> None:
    """The CONNECT fields are the documented ones; the server's own verifier accepts them."""
    from iotvideo.devicelink.auth import check_password, identity_from_connect

    agent, _ = offline_agent()
    assert re.fullmatch(r"a1TestPk001&cam0001\|securemode=3,signmethod=hmacsha256,timestamp=\d+\|", agent.client_id)
    assert agent.username == "cam0001&a1TestPk001"
    ident = identity_from_connect(agent.client_id, agent.username)
    password = agent.link._connect_args["password"]
    assert check_password("s3cr3t", ident, password) and not check_password("wrong", ident, password)
