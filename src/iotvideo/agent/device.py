"""A camera that speaks the device protocol (``docs/device-protocol.md``): the device agent.

:class:`CameraAgent` connects to the server's MQTT endpoint as one device (``{pk}&{dn}`` client id,
``{dn}&{pk}`` username, HMAC-SHA256 password) through a :class:`ReconnectingClient` (exponential
backoff), and on every (re)connect reports its firmware on ``/ota/device/inform/{pk}/{dn}`` and posts
all of its properties.  It answers every service of the thing model:

* ``GetDeviceStatus`` (sync, usually over RRPC): the agent's real status;
* ``property/set``: applies writable properties, replies, re-posts them; ``property/get``: the values;
* the media services (:data:`MEDIA_SERVICES`) go to a :class:`MediaBackend`.  The default is
  :class:`~iotvideo.agent.media.LiveMedia` (live push) when PyAV is installed, otherwise
  :class:`UnsupportedMedia`; a service a backend lacks raises :class:`NotSupported`, answered with
  code 501 (``alink.CODE_NOT_SUPPORTED``) and a clear message — never a fake success;
* anything malformed or unknown gets an error reply (460, 6207, 6321, …) when it has an id to
  answer, and is logged otherwise; it never stops the agent.

``raise_alarm`` posts an ``AlarmEvent``; ``simulate_motion_every`` does it periodically while
``AlarmSwitch`` is on and ``MotionDetectSensitivity`` is not off.  ``counters`` and ``replies``
record what happened (for logs, tests and benchmarks).  The device secret is never logged.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import ssl as _ssl
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

import orjson

from iotvideo.devicelink import alink, tsl
from iotvideo.devicelink.auth import expected_password
from iotvideo.devicelink.mqtt import ConnAck, Publish
from iotvideo.devicelink.mqtt.client import MqttClient, MqttError, ReconnectingClient

__all__ = [
    "MEDIA_SERVICES",
    "CameraAgent",
    "MediaBackend",
    "NotSupported",
    "ServiceAnswer",
    "ServiceError",
    "UnsupportedMedia",
    "default_media",
    "redact_source",
]

log = logging.getLogger("iotvideo.agent")

MEDIA_SERVICES: Final[dict[str, str]] = {
    "StartPushStreaming": "start_push_streaming",
    "StopPushStreaming": "stop_push_streaming",
    "ForceIFrame": "force_i_frame",
    "TriggerPicCapture": "trigger_pic_capture",
    "StartTriggerRecord": "start_trigger_record",
    "StopTriggerRecord": "stop_trigger_record",
    "QueryRecordList": "query_record_list",
    "QueryMonthRecord": "query_month_record",
    "StartVod": "start_vod",
    "StartVodByTime": "start_vod_by_time",
    "StopVod": "stop_vod",
}
"""Thing-model service identifier -> :class:`MediaBackend` method handling it."""

SIGN_METHOD: Final = "hmacsha256"
DEFAULT_FIRMWARE: Final = "1.0.0"


class ServiceError(Exception):
    """A service failed: ``code`` (an Alink reply code other than 200) and ``message`` go into the reply."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class NotSupported(ServiceError):
    """The device does not implement the service: answered with 501 (``alink.CODE_NOT_SUPPORTED``)."""

    def __init__(self, identifier: str, reason: str = "") -> None:
        text = f"{identifier} is not supported by this device"
        super().__init__(alink.CODE_NOT_SUPPORTED, f"{text}: {reason}" if reason else text)
        self.identifier = identifier


@runtime_checkable
class MediaBackend(Protocol):
    """What the media services do.  Each method gets the call's validated arguments and returns the
    reply's ``data`` (the service's outputs, ``{}`` if none), or raises :class:`ServiceError` /
    :class:`NotSupported`.  ``streams_pushing`` feeds ``GetDeviceStatus``; ``close`` runs when the
    agent stops."""

    async def start_push_streaming(self, args: dict[str, Any]) -> dict[str, Any]: ...
    async def stop_push_streaming(self, args: dict[str, Any]) -> dict[str, Any]: ...
    async def force_i_frame(self, args: dict[str, Any]) -> dict[str, Any]: ...
    async def trigger_pic_capture(self, args: dict[str, Any]) -> dict[str, Any]: ...
    async def start_trigger_record(self, args: dict[str, Any]) -> dict[str, Any]: ...
    async def stop_trigger_record(self, args: dict[str, Any]) -> dict[str, Any]: ...
    async def query_record_list(self, args: dict[str, Any]) -> dict[str, Any]: ...
    async def query_month_record(self, args: dict[str, Any]) -> dict[str, Any]: ...
    async def start_vod(self, args: dict[str, Any]) -> dict[str, Any]: ...
    async def start_vod_by_time(self, args: dict[str, Any]) -> dict[str, Any]: ...
    async def stop_vod(self, args: dict[str, Any]) -> dict[str, Any]: ...
    def streams_pushing(self) -> int: ...
    async def close(self) -> None: ...


class UnsupportedMedia:
    """The default backend until media exists: every media service raises :class:`NotSupported`."""

    REASON: Final = "this agent has no media backend yet (live, pictures, recording and playback come with media)"

    def __init__(self, source: str = "virtual") -> None:
        self.source = source

    def _no(self, identifier: str) -> dict[str, Any]:
        raise NotSupported(identifier, f"{self.REASON}; source {redact_source(self.source)}")

    async def start_push_streaming(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._no("StartPushStreaming")

    async def stop_push_streaming(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._no("StopPushStreaming")

    async def force_i_frame(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._no("ForceIFrame")

    async def trigger_pic_capture(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._no("TriggerPicCapture")

    async def start_trigger_record(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._no("StartTriggerRecord")

    async def stop_trigger_record(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._no("StopTriggerRecord")

    async def query_record_list(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._no("QueryRecordList")

    async def query_month_record(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._no("QueryMonthRecord")

    async def start_vod(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._no("StartVod")

    async def start_vod_by_time(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._no("StartVodByTime")

    async def stop_vod(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._no("StopVod")

    def streams_pushing(self) -> int:
        return 0

    async def close(self) -> None:
        return None


def default_media(source: str) -> MediaBackend:
    """:class:`~iotvideo.agent.media.LiveMedia` for ``source`` when PyAV is importable, else :class:`UnsupportedMedia`."""
    try:
        from iotvideo.agent.media import LiveMedia
    except ImportError as exc:
        log.info("no live media (%s): media services will answer 501", exc)
        return UnsupportedMedia(source)
    return LiveMedia(source)


def redact_source(source: str) -> str:
    """The source without credentials (``rtsp://user:pass@host/…`` -> ``rtsp://***@host/…``)."""
    if "://" not in source:
        return source
    try:
        parts = urlsplit(source)
    except ValueError:
        return "<unparsable URL>"
    if "@" not in parts.netloc:
        return source
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class ServiceAnswer:
    """One reply the agent sent to a cloud request (service call, RRPC, property set/get)."""

    identifier: str
    msg_id: str
    code: int
    message: str
    data: Any = None
    rrpc_id: str | None = None
    time: float = field(default_factory=time.time)


def default_properties(firmware: str) -> dict[str, Any]:
    """What a freshly started agent reports: no storage (no SD card yet), sensible camera settings."""
    return {
        "FirmwareVersion": firmware,
        "StorageStatus": 0,
        "StorageTotalCapacity": 0.0,
        "StorageRemainCapacity": 0.0,
        "StreamVideoQuality": 2,
        "SubStreamVideoQuality": 0,
        "AlarmSwitch": 1,
        "MotionDetectSensitivity": 3,
        "AlarmFrequencyLevel": 1,
        "DayNightMode": 2,
        "ImageFlipState": 0,
        "StatusLight": 1,
        "EncryptSwitch": 0,
    }


class CameraAgent:
    """One camera connected to the server until :meth:`stop`.  See the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        product_key: str,
        device_name: str,
        device_secret: str,
        *,
        source: str = "virtual",
        firmware: str = DEFAULT_FIRMWARE,
        media: MediaBackend | None = None,
        simulate_motion_every: float | None = None,
        ssl: _ssl.SSLContext | None = None,
        keepalive: int = 60,
        backoff_min: float = 1.0,
        backoff_max: float = 30.0,
        publish_timeout: float = 10.0,
        properties: dict[str, Any] | None = None,
    ) -> None:
        if simulate_motion_every is not None and not simulate_motion_every > 0:
            raise ValueError("simulate_motion_every must be a positive number of seconds")
        self.host = host
        self.port = port
        self.product_key = product_key
        self.device_name = device_name
        self.source = source
        self.firmware = firmware
        self.media: MediaBackend = media if media is not None else default_media(source)
        self.simulate_motion_every = simulate_motion_every
        self.publish_timeout = publish_timeout
        self.properties: dict[str, Any] = default_properties(firmware) | dict(properties or {})
        errors = tsl.validate_properties(self.properties)
        if errors:
            raise ValueError("invalid properties: " + "; ".join(str(e) for e in errors[:5]))
        self.counters: collections.Counter[str] = collections.Counter()
        self.replies: collections.deque[ServiceAnswer] = collections.deque(maxlen=500)
        self.connected_since: float | None = None  # epoch seconds of the current connection
        self.started_at = time.time()
        self._started_mono = time.monotonic()
        self._ids = itertools.count(int(time.time() * 1000))
        self._posts: collections.OrderedDict[str, str] = collections.OrderedDict()  # msg id -> what was posted
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._stopped: asyncio.Event | None = None
        self._stop_requested: asyncio.Event | None = None
        self._motion_task: asyncio.Task[None] | None = None
        self._prefix = f"/sys/{product_key}/{device_name}/"
        timestamp = str(int(time.time() * 1000))
        securemode = 2 if ssl is not None else 3
        cid = f"{product_key}&{device_name}"
        self.client_id = f"{cid}|securemode={securemode},signmethod={SIGN_METHOD},timestamp={timestamp}|"
        self.username = f"{device_name}&{product_key}"
        password = expected_password(device_secret, cid, product_key, device_name, timestamp, SIGN_METHOD)
        self.link = ReconnectingClient(
            host, port, client_id=self.client_id, username=self.username, password=password,
            keepalive=keepalive, ssl=ssl, on_message=self._on_message, on_connected=self._on_connected,
            backoff_min=backoff_min, backoff_max=max(backoff_min, backoff_max),
        )

    # --- lifecycle ----------------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self.link.connected.is_set()

    @property
    def uptime_seconds(self) -> int:
        return int(time.monotonic() - self._started_mono)

    def start(self) -> None:
        """Start connecting (and the simulated motion, if configured) in the background."""
        if self._stopped is None:
            self._stopped = asyncio.Event()
            self._stop_requested = asyncio.Event()
        log.info("camera %s/%s starting: server %s:%d, source %s, firmware %s", self.product_key,
                 self.device_name, self.host, self.port, redact_source(self.source), self.firmware)
        self.link.start()
        if self.simulate_motion_every is not None and self._motion_task is None:
            self._motion_task = asyncio.get_running_loop().create_task(self._simulate_motion())

    async def run(self) -> None:
        """Start and keep running until :meth:`stop` is called or the task is cancelled."""
        self.start()
        assert self._stop_requested is not None
        try:
            await self._stop_requested.wait()
        finally:
            await asyncio.shield(self._shutdown())

    async def stop(self) -> None:
        """Disconnect cleanly (MQTT DISCONNECT) and stop every background task."""
        if self._stop_requested is not None:
            self._stop_requested.set()
        await self._shutdown()

    async def _shutdown(self) -> None:
        if self._stopping:
            if self._stopped is not None:
                await self._stopped.wait()
            return
        self._stopping = True
        try:
            tasks = [t for t in (self._motion_task, *self._tasks) if t is not None]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.link.close()  # (a downlink arriving meanwhile spawns nothing: see _spawn)
            try:
                await self.media.close()
            except Exception:
                log.exception("media backend failed to close")
            log.info("camera %s/%s stopped", self.product_key, self.device_name)
        finally:
            if self._stopped is not None:
                self._stopped.set()

    # --- uplink -------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """``GetDeviceStatus`` outputs, plus ``ConnectedSince`` (epoch s, 0 if not connected) and ``Source``."""
        return {
            "FirmwareVersion": self.properties["FirmwareVersion"],
            "StorageStatus": self.properties["StorageStatus"],
            "StreamsPushing": int(self.media.streams_pushing()),
            "UptimeSeconds": self.uptime_seconds,
            "ConnectedSince": int(self.connected_since or 0),
            "Source": redact_source(self.source),
        }

    async def post_properties(self, names: list[str] | None = None, *, client: MqttClient | None = None) -> str:
        """Post the given properties (all by default); the message id."""
        params = {k: self.properties[k] for k in (names if names is not None else list(self.properties))}
        msg_id = self._next_id()
        topic, payload = alink.property_post(self.product_key, self.device_name, msg_id, params)
        self._remember_post(msg_id, "property")
        await self._publish(topic, payload, client=client)
        self.counters["property_posts"] += 1
        log.info("posted properties id=%s %s", msg_id, ",".join(params))
        return msg_id

    async def report_firmware(self, *, client: MqttClient | None = None) -> None:
        """``/ota/device/inform/{pk}/{dn}`` with the firmware version."""
        payload = orjson.dumps({"id": self._next_id(), "params": {"version": self.properties["FirmwareVersion"]}})
        await self._publish(f"/ota/device/inform/{self.product_key}/{self.device_name}", payload, client=client)
        log.info("reported firmware %s", self.properties["FirmwareVersion"])

    async def raise_alarm(self, alarm_type: int = 1, data: str = "", pic_id: str = "") -> str:
        """Post an ``AlarmEvent`` now (whatever ``AlarmSwitch`` says); the message id.

        Raises ValueError for values the thing model refuses and ``MqttError`` when not connected
        within ``publish_timeout``."""
        now = time.time()
        value = {"AlarmType": alarm_type, "AlarmPicId": pic_id, "Data": data, "AlarmTime": int(now)}
        errors = tsl.validate_event("AlarmEvent", value)
        if errors:
            raise ValueError("; ".join(str(e) for e in errors))
        msg_id = self._next_id()
        topic, payload = alink.event_post(self.product_key, self.device_name, msg_id, "AlarmEvent", value,
                                          int(now * 1000))
        self._remember_post(msg_id, "event:AlarmEvent")
        await self._publish(topic, payload)
        self.counters["alarm_events_posted"] += 1
        log.info("posted AlarmEvent id=%s type=%d", msg_id, alarm_type)
        return msg_id

    async def _simulate_motion(self) -> None:
        period = self.simulate_motion_every
        assert period is not None
        while True:
            await asyncio.sleep(period)
            if not self.is_connected:
                log.debug("simulated motion skipped: not connected")
                continue
            if self.properties["AlarmSwitch"] == 0 or self.properties["MotionDetectSensitivity"] == 0:
                self.counters["alarms_suppressed"] += 1
                log.debug("simulated motion ignored: alarm detection is off")
                continue
            try:
                await self.raise_alarm(1, '{"simulated":true}')
            except MqttError as exc:
                log.warning("simulated motion not posted: %s", exc)

    # --- connection -----------------------------------------------------------------------------

    async def _on_connected(self, client: MqttClient, connack: ConnAck) -> None:
        self.connected_since = time.time()
        self.counters["connects"] += 1
        log.info("connected to %s:%d as %s/%s (connection %d)", self.host, self.port, self.product_key,
                 self.device_name, self.counters["connects"])
        self._spawn(self._watch(client))
        await self.report_firmware(client=client)
        await self.post_properties(client=client)

    async def _watch(self, client: MqttClient) -> None:
        reason = await client.wait_closed()
        self.connected_since = None
        self.counters["disconnects"] += 1
        if not self._stopping:
            log.warning("disconnected from %s:%d: %s", self.host, self.port, reason or "closed")

    async def _publish(self, topic: str, payload: bytes, *, client: MqttClient | None = None) -> None:
        if client is not None:
            await client.publish(topic, payload, qos=1, timeout=self.publish_timeout)
        else:
            await self.link.publish(topic, payload, qos=1, timeout=self.publish_timeout)

    # --- downlink -------------------------------------------------------------------------------

    def _on_message(self, msg: Publish) -> None:
        """Replies are handled in order; requests each in their own task (a slow media call does not
        hold up ``GetDeviceStatus``)."""
        if msg.topic.endswith("_reply"):
            self._handle_reply(msg.topic, msg.payload)
        else:
            self._spawn(self.handle_downlink(msg.topic, msg.payload))

    async def handle_downlink(self, topic: str, payload: bytes) -> ServiceAnswer | None:
        """Handle one message from the cloud; the reply sent, if any.  Never raises (but cancellation)."""
        try:
            return await self._handle(topic, payload)
        except asyncio.CancelledError:
            raise
        except MqttError as exc:
            log.warning("reply to %s not sent: %s", topic[:200], exc)
        except Exception:
            log.exception("failed to handle %s", topic[:200])
        return None

    async def _handle(self, topic: str, payload: bytes) -> ServiceAnswer | None:
        if topic == self._prefix + "thing/service/property/get":
            return await self._property_get(topic, payload)
        if topic.endswith("_reply"):
            self._handle_reply(topic, payload)
            return None
        try:
            down = alink.parse_downlink(self.product_key, self.device_name, topic, payload)
        except alink.AlinkError as e:
            return await self._malformed(topic, e)
        if down is None:
            self.counters["ignored_downlinks"] += 1
            log.info("ignored message on %s (not a request this camera handles)", topic[:200])
            return None
        if isinstance(down, alink.PropertySet):
            return await self._property_set(topic, down)
        if isinstance(down, alink.ServiceCall):
            return await self._service(topic, down)
        return None

    def _handle_reply(self, topic: str, payload: bytes) -> None:
        try:
            down = alink.parse_downlink(self.product_key, self.device_name, topic, payload)
        except alink.AlinkError as e:
            self.counters["malformed_downlinks"] += 1
            log.warning("malformed reply on %s: %s", topic[:200], e.message)
            return
        if not isinstance(down, alink.AlinkReply):
            return
        what = self._posts.pop(down.id, "post")
        if down.code == alink.CODE_OK:
            if what == "property":
                self.counters["property_posts_acked"] += 1
            elif what.startswith("event:"):
                self.counters[f"{what[len('event:'):]}_acked"] += 1
                if what == "event:AlarmEvent":
                    self.counters["alarm_events_acked"] += 1
                log.info("%s id=%s acknowledged", what[len("event:"):], down.id)
        else:
            self.counters["posts_refused"] += 1
            log.warning("cloud refused %s id=%s: %d %s", what, down.id, down.code, down.message or "")

    async def _malformed(self, topic: str, e: alink.AlinkError) -> ServiceAnswer | None:
        self.counters["malformed_downlinks"] += 1
        rrpc_id: str | None = None
        if topic.startswith("/ext/rrpc/"):
            rrpc_id = topic[len("/ext/rrpc/"):].partition("/")[0] or None
        msg_id = e.msg_id or rrpc_id
        if msg_id is None:  # the protocol: a payload whose id cannot be read cannot be answered
            log.warning("malformed request on %s cannot be answered (no readable id): %d %s",
                        topic[:200], e.code, e.message)
            return None
        ident = topic.rpartition("/")[2] if "/thing/service/" in topic else topic
        if topic.endswith("/thing/service/property/set"):
            ident = "property.set"
        return await self._answer(topic, ident, msg_id, e.code, None, e.message, rrpc_id)

    async def _answer(self, request_topic: str, identifier: str, msg_id: str, code: int, data: Any,
                      message: str | None, rrpc_id: str | None = None) -> ServiceAnswer:
        text = message if message is not None else alink.REPLY_MESSAGES.get(code, "error")
        topic, payload = alink.reply(request_topic, msg_id, code, data, text)
        answer = ServiceAnswer(identifier, msg_id, code, text, data, rrpc_id)
        self.replies.append(answer)
        log.info("answered %s id=%s%s: %d %s", identifier, msg_id, " (rrpc)" if rrpc_id else "", code, text)
        await self._publish(topic, payload)
        return answer

    async def _service(self, topic: str, call: alink.ServiceCall) -> ServiceAnswer:
        ident = call.identifier
        self.counters["service_calls"] += 1
        log.info("service call %s id=%s%s args=%s", ident, call.id, " (rrpc)" if call.rrpc_id else "",
                 ",".join(sorted(call.params)) or "-")
        errors = tsl.validate_service_input(ident, call.params)
        if errors:
            return await self._answer(topic, ident, call.id, errors[0].code, None,
                                      "; ".join(str(e) for e in errors[:5]), call.rrpc_id)
        if ident == "GetDeviceStatus":
            return await self._answer(topic, ident, call.id, alink.CODE_OK, self.status(), "success", call.rrpc_id)
        method = MEDIA_SERVICES.get(ident)
        if method is None:  # a service added to the thing model without a handler here
            return await self._answer(topic, ident, call.id, alink.CODE_NOT_SUPPORTED, None,
                                      f"{ident} is not supported by this device", call.rrpc_id)
        try:
            data = await getattr(self.media, method)(dict(call.params))
        except ServiceError as exc:
            return await self._answer(topic, ident, call.id, exc.code, None, exc.message, call.rrpc_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("media backend failed on %s", ident)
            return await self._answer(topic, ident, call.id, alink.CODE_SYSTEM_ERROR, None,
                                      f"{ident} failed: {type(exc).__name__}", call.rrpc_id)
        return await self._answer(topic, ident, call.id, alink.CODE_OK, data or {}, "success", call.rrpc_id)

    async def _property_set(self, topic: str, req: alink.PropertySet) -> ServiceAnswer:
        self.counters["property_sets"] += 1
        log.info("property set id=%s %s", req.id, ",".join(f"{k}={v!r}" for k, v in req.params.items()))
        errors = tsl.validate_properties(req.params, writable_only=True)
        if errors:  # all or nothing
            return await self._answer(topic, "property.set", req.id, errors[0].code, None,
                                      "; ".join(str(e) for e in errors[:5]))
        values = {k: (int(v) if isinstance(v, bool) else v) for k, v in req.params.items()}
        self.properties.update(values)
        answer = await self._answer(topic, "property.set", req.id, alink.CODE_OK, {}, "success")
        if values:
            await self.post_properties(list(values))
        return answer

    async def _property_get(self, topic: str, payload: bytes) -> ServiceAnswer | None:
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return await self._malformed(topic, alink.AlinkError(alink.CODE_NOT_JSON, "payload is not valid JSON"))
        raw_id = body.get("id") if isinstance(body, dict) else None
        msg_id = str(raw_id) if isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) else None
        names = body.get("params") if isinstance(body, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return await self._malformed(topic, alink.AlinkError(
                alink.CODE_PARAM_ERROR, "params must be a list of property identifiers", msg_id))
        if msg_id is None:
            return await self._malformed(topic, alink.AlinkError(alink.CODE_PARAM_ERROR, "id is missing"))
        unknown = [n for n in names if n not in self.properties]
        if unknown:
            return await self._answer(topic, "property.get", msg_id, alink.CODE_IDENTIFIER_NOT_DEFINED, None,
                                      f"property {unknown[0][:64]!r} is not defined in the thing model")
        data = {n: self.properties[n] for n in (names or list(self.properties))}
        return await self._answer(topic, "property.get", msg_id, alink.CODE_OK, data, "success")

    # --- internals ------------------------------------------------------------------------------

    def _next_id(self) -> str:
        return str(next(self._ids))

    def _remember_post(self, msg_id: str, what: str) -> None:
        self._posts[msg_id] = what
        while len(self._posts) > 1000:
            self._posts.popitem(last=False)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        if self._stopping:
            coro.close()  # a stopping agent takes on no more work
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

