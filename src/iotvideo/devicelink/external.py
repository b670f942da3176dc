"""External broker mode: the server is a privileged client of someone else's MQTT broker.

``iotvideo serve --mqtt-mode external --mqtt-broker-url mqtt://[user:pass@]host:port`` (or
``mqtts://`` for TLS) makes :class:`ExternalBroker` the device link's ``Transport`` instead of the
embedded broker. Devices connect to the external broker, which must authenticate them, apply the
topic ACL and auto-subscribe them (``docs/device-protocol.md``, "External broker"); the server

* subscribes with **shared subscriptions** (``$share/{group}/…``) to what devices post — property and
  event posts, device-info updates, OTA version reports — so several server nodes split that work,
  each message handled by exactly one node;
* subscribes **per node** (plain subscriptions) to what answers the cloud's calls — service replies,
  property-set replies, RRPC replies — because a reply must reach the node whose call waits for it
  (a node ignores replies to calls it did not make), and to the broker's presence events, so every
  node knows which devices are connected (``is_connected``);
* maps ``{pk}``/``{dn}`` of the topic to the device (unknown and disabled devices are ignored) and
  hands the message to :meth:`DeviceLink.uplink`, the same code path the embedded broker uses;
* delivers cloud → device messages by publishing them on the device's topic.

MQTT 3.1.1 has no *no-local*: the broker hands the server its own publications back when they match
its subscriptions (service calls on ``thing/service/{id}``, RRPC requests on the same topic as the
RRPC reply). They are recognised and dropped: a call topic is not an uplink topic for
:func:`alink.classify`, and an RRPC request carries no ``code``.

Presence: EMQX publishes ``$SYS/brokers/{node}/clients/{clientid}/connected`` and ``…/disconnected``
with JSON bodies (``clientid``, ``username``, ``ipaddress``, ``reason``, …). The prefix before
``/{clientid}/…`` is configurable with the URL query parameter ``presence`` (a topic filter, default
``$SYS/brokers/+/clients``; ``presence=none`` turns presence off) — Mosquitto, for one, drops
client publications to ``$SYS``, so a bridge or plugin publishing such events must use another
prefix. Events are not retained, so at start and after every reconnect to the broker the node
takes the devices marked ``ONLINE`` in the database as connected, and it re-reads the database
every ``resync`` seconds (URL parameter, default 10) for devices whose presence it has not heard on
the current connection. Without presence events (or for a device whose presence this node has not
heard yet), a device that publishes is taken as connected; such a device is never seen to go
offline (see the protocol document).

``kick`` cannot be done in plain MQTT: it is logged, and this node stops treating the device as
connected and ignores its messages; the other nodes follow at their next resync, when the database
says the device is disabled (closing the connection through EMQX's HTTP API,
``DELETE /api/v5/clients/{clientid}``, is the next step).

:meth:`ExternalBroker.http_auth` and :meth:`ExternalBroker.http_acl` implement EMQX's HTTP
authentication and authorisation hooks (``POST /mqtt/auth`` and ``POST /mqtt/acl`` of the server).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import orjson

from iotvideo.config import Settings
from iotvideo.devicelink import alink
from iotvideo.devicelink.auth import (DeviceAuthError, parse_client_id, parse_username, valid_device_name,
                                     valid_product_key)
from iotvideo.devicelink.broker import ConnectRefused, Identity
from iotvideo.devicelink.link import DeviceLink
from iotvideo.devicelink.mqtt import Connect, Publish, topic_matches, valid_topic_filter
from iotvideo.devicelink.mqtt.client import MqttError, MqttTimeout, ReconnectingClient
from iotvideo.devicelink.topics_acl import device_may_publish, device_may_subscribe

log = logging.getLogger("iotvideo.devicelink.external")

DEFAULT_PRESENCE: Final = "$SYS/brokers/+/clients"

# What devices post: one node of the share group handles each message.
SHARED_FILTERS: Final = (
    "/sys/+/+/thing/event/+/post",  # also matches thing/event/property/post
    "/sys/+/+/thing/deviceinfo/update",
    "/ota/device/inform/+/+",
)
# Answers to the cloud's calls: every node gets them, only the caller's node has the pending call.
NODE_FILTERS: Final = (
    "/sys/+/+/thing/service/+",  # {id}_reply (the cloud's own calls on {id} come back too: dropped)
    "/sys/+/+/thing/service/property/set_reply",
    "/ext/rrpc/+/sys/+/+/thing/service/+",  # replies, and the cloud's own requests (dropped)
)
# EMQX's disconnect reasons when a new connection of the same client replaces the old one.
TAKEOVER_REASONS: Final = frozenset({"takenover", "takeovered", "discarded"})
SUBACK_FAILURE: Final = 0x80


class ExternalBrokerError(ValueError):
    """A broker URL or share group that cannot be used."""


@dataclass(frozen=True)
class BrokerUrl:
    """``mqtt[s]://[user[:password]@]host[:port][?presence=FILTER|none&client_id=PREFIX&ca=FILE&resync=S]``."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    presence: str | None  # topic-filter prefix of presence events; None: no presence events
    client_id_prefix: str
    ca_file: str | None
    resync_s: float = 10.0  # how often to re-read the ONLINE devices from the database; 0: never

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=self.ca_file)

    def redacted(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}:***@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def parse_broker_url(url: str, username: str | None = None, password: str | None = None) -> BrokerUrl:
    """Parse the broker URL; ``username``/``password`` (the settings) override the URL's user info."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ExternalBrokerError(f"broker URL must start with mqtt:// or mqtts://, not {url.split(':', 1)[0]!r}")
    tls = parts.scheme in ("mqtts", "ssl")
    if not parts.hostname:
        raise ExternalBrokerError("broker URL has no host")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise ExternalBrokerError("broker URL has an invalid port") from None
    # Not form decoding: a '+' in a topic filter stays a '+'.
    query = {unquote(k): unquote(v) for k, _, v in (p.partition("=") for p in parts.query.split("&") if p)}
    unknown = set(query) - {"presence", "client_id", "ca", "resync"}
    if unknown:
        raise ExternalBrokerError(f"unknown broker URL parameter(s): {', '.join(sorted(unknown))}")
    presence: str | None = query.get("presence", DEFAULT_PRESENCE).rstrip("/")
    if presence in ("", "none", "off"):
        presence = None
    elif not valid_topic_filter(presence + "/+/connected") or "#" in presence:
        raise ExternalBrokerError(f"presence must be a topic filter prefix without '#', not {presence!r}")
    prefix = query.get("client_id") or "iotvideo"
    if any(c in prefix for c in "/+#"):
        raise ExternalBrokerError("client_id must not contain '/', '+' or '#'")
    try:
        resync = float(query.get("resync") or 10.0)
    except ValueError:
        raise ExternalBrokerError("resync must be a number of seconds") from None
    if not 0 <= resync < 86400:
        raise ExternalBrokerError("resync must be 0 (never) or a number of seconds below 86400")
    user = username if username is not None else (unquote(parts.username) if parts.username else None)
    pw = password if password is not None else (unquote(parts.password) if parts.password else None)
    return BrokerUrl(parts.hostname, port, tls, user, pw, presence, prefix, query.get("ca") or None, resync)


def device_of(topic: str) -> tuple[str, str] | None:
    """``(pk, dn)`` named by a device topic, or None (not a device topic, or malformed names)."""
    parts = topic.split("/")
    if len(parts) > 4 and parts[0] == "" and parts[1] == "sys":
        pk, dn = parts[2], parts[3]
    elif len(parts) > 7 and parts[0] == "" and parts[1] == "ext" and parts[2] == "rrpc" and parts[4] == "sys":
        pk, dn = parts[5], parts[6]
    elif len(parts) == 6 and parts[0] == "" and parts[1:4] == ["ota", "device", "inform"]:
        pk, dn = parts[4], parts[5]
    else:
        return None
    if not valid_product_key(pk) or not valid_device_name(dn):
        return None
    return pk, dn


def _is_reply_payload(payload: bytes) -> bool:
    """An RRPC reply has a ``code``; the cloud's own request on the same topic has none."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return True  # let the link answer it as a bad uplink
    return not isinstance(body, dict) or "code" in body


class ExternalBroker:
    """The device link's transport over an external MQTT broker (see the module documentation)."""

    def __init__(self, settings: Settings, link: DeviceLink, *, start_timeout: float = 10.0,
                 max_outgoing: int = 10_000) -> None:
        group = settings.mqtt_share_group
        if not group or any(c in group for c in "/+#"):
            raise ExternalBrokerError(f"mqtt_share_group must be a non-empty name without '/', '+', '#': {group!r}")
        self.settings = settings
        self.link = link
        self.url = parse_broker_url(settings.mqtt_broker_url, settings.mqtt_broker_username,
                                    settings.mqtt_broker_password)
        self.group = group
        self.client_id = f"{self.url.client_id_prefix}-{secrets.token_hex(5)}"
        self.start_timeout = start_timeout
        self.filters: list[str] = [f"$share/{group}/{f}" for f in SHARED_FILTERS] + list(NODE_FILTERS)
        self.presence_filters: tuple[str, ...] = ()
        if self.url.presence is not None:
            self.presence_filters = (f"{self.url.presence}/+/connected", f"{self.url.presence}/+/disconnected")
            self.filters += self.presence_filters
        self._mqtt: ReconnectingClient | None = None
        self._out: asyncio.Queue[tuple[str, bytes, int]] = asyncio.Queue(max_outgoing)
        self._writer: asyncio.Task[None] | None = None
        self._online: set[str] = set()  # iot ids this node takes as connected
        self._sessions: dict[str, set[str]] = {}  # iot id -> client ids connected (from presence events)
        self._presence_heard: set[str] = set()  # iot ids with a presence event on this broker connection
        self._disabled: set[str] = set()  # iot ids disabled (database, or kicked on this node)
        self._resync_task: asyncio.Task[None] | None = None

    # --- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect and subscribe, waiting up to ``start_timeout``; then keeps reconnecting in the
        background (a broker that is not up yet is logged, not fatal)."""
        self._writer = asyncio.ensure_future(self._write_loop())
        if self.url.resync_s > 0:
            self._resync_task = asyncio.ensure_future(self._resync_loop())
        self._mqtt = ReconnectingClient(
            self.url.host, self.url.port, client_id=self.client_id, username=self.url.username,
            password=self.url.password, ssl=self.url.ssl_context(), keepalive=30, clean_session=True,
            on_message=self._on_message, on_connected=self._on_connected, backoff_min=0.5, backoff_max=30.0)
        self._mqtt.start()
        try:
            codes = await self._mqtt.subscribe([(f, 1) for f in self.filters], timeout=self.start_timeout)
        except MqttTimeout:
            log.warning("external broker %s not reachable within %.0fs (%s); retrying in the background",
                        self.url.redacted(), self.start_timeout, self._mqtt.last_error)
            return
        refused = [f for f, c in zip(self.filters, codes) if c == SUBACK_FAILURE]
        if refused:
            log.error("external broker %s refused the subscriptions %s: grant the server's user these topics",
                      self.url.redacted(), refused)
        log.info("device link on external broker %s as %s, share group %r", self.url.redacted(),
                 self.client_id, self.group)

    async def stop(self) -> None:
        if self._mqtt is not None and self._mqtt.connected.is_set():
            try:  # let queued replies go out
                async with asyncio.timeout(1.0):
                    while not self._out.empty():
                        await asyncio.sleep(0.01)
            except TimeoutError:
                pass
        for task in (self._writer, self._resync_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._writer = self._resync_task = None
        if self._mqtt is not None:
            await self._mqtt.close()
            self._mqtt = None

    @property
    def connected_to_broker(self) -> bool:
        return self._mqtt is not None and self._mqtt.connected.is_set()

    # --- Transport --------------------------------------------------------------------------------
    def deliver(self, key: str, topic: str, payload: bytes, qos: int = 0) -> bool:
        """Publish ``payload`` on ``topic``; False when the broker is unreachable or the queue is full."""
        if not self.connected_to_broker:
            return False
        try:
            self._out.put_nowait((topic, payload, qos))
        except asyncio.QueueFull:
            log.warning("outgoing queue full; dropped a message to %s", key)
            return False
        return True

    def is_connected(self, key: str) -> bool:
        return key in self._online

    def kick(self, key: str, reason: str) -> bool:
        """Plain MQTT cannot disconnect another client: the device stays connected to the broker.
        This node stops treating it as connected and ignores what it sends (the other nodes do the
        same at their next resync, from the database); False says nothing was closed."""
        log.warning("cannot disconnect device %s (%s) through an external broker; disconnect it in the "
                    "broker (EMQX: DELETE /api/v5/clients/{clientid})", key, reason)
        self._online.discard(key)
        self._sessions.pop(key, None)
        self._disabled.add(key)
        return False

    # --- internals --------------------------------------------------------------------------------
    async def _write_loop(self) -> None:
        while True:
            topic, payload, qos = await self._out.get()
            mqtt = self._mqtt
            if mqtt is None:
                continue
            try:
                await mqtt.publish(topic, payload, qos, timeout=5.0)
            except (MqttError, OSError) as e:
                log.warning("publish to %s failed: %s", topic[:120], e)

    async def _on_connected(self, _client: Any, _connack: Any) -> None:
        """After every (re)connect: presence events missed while away are lost, so start again from
        the devices the database has ONLINE."""
        self._presence_heard = set()
        await self._resync()
        log.info("external broker connected; %d devices ONLINE", len(self._online))

    async def _resync(self) -> None:
        """Devices whose presence this node heard on the current connection keep what the events
        said; the others are connected exactly when the database (written by every node) has them
        ONLINE — so a node learns of devices that connected before it started, or that only another
        node saw publish. Disabled devices are dropped either way (no node can disconnect them)."""
        try:
            online, disabled = await self._database_view()
        except Exception:
            log.exception("could not read the devices ONLINE from the database")
            return
        heard = self._presence_heard
        self._disabled = disabled
        self._online = ({k for k in self._online if k in heard} | (online - heard)) - disabled
        self._sessions = {k: v for k, v in self._sessions.items() if k in heard and k not in disabled}

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.url.resync_s)
            if self.connected_to_broker:
                await self._resync()

    async def _database_view(self) -> tuple[set[str], set[str]]:
        """The iot ids ONLINE, and those disabled."""
        return await self.link.state.online_and_disabled()

    async def _on_message(self, msg: Publish) -> None:
        try:
            if self.presence_filters and any(topic_matches(f, msg.topic) for f in self.presence_filters):
                await self._on_presence(msg, connected=msg.topic.endswith("/connected"))
            else:
                await self._on_device_message(msg.topic, msg.payload)
        except Exception:
            log.exception("failed to handle a message on %r", msg.topic[:120])

    async def _identity(self, pk: str, dn: str) -> tuple[Identity, str] | None:
        cred = await self.link.state.credentials(pk, dn)
        # Another node's DisableThing reaches this one through the database (at the next resync),
        # not through the credentials cache.
        if cred is None or not cred.enabled or cred.iot_id in self._disabled:
            return None
        return Identity(cred.iot_id, cred.product_key, cred.device_name, cred.tenant_id), cred.status

    async def _on_device_message(self, topic: str, payload: bytes) -> None:
        named = device_of(topic)
        if named is None:
            return
        pk, dn = named
        kind = alink.classify(pk, dn, topic)
        if isinstance(kind, alink.Other):
            return  # e.g. the cloud's own service call, echoed back
        if isinstance(kind, alink.RrpcReply) and not _is_reply_payload(payload):
            return  # the cloud's own RRPC request, echoed back
        found = await self._identity(pk, dn)
        if found is None:
            log.debug("message from an unknown or disabled device %s/%s ignored", pk, dn)
            return
        ident, status = found
        if ident.key not in self._online and ident.key not in self._presence_heard:
            # No presence event for it yet: a device that publishes is connected.
            self._online.add(ident.key)
            if status != "ONLINE":
                self.link.device_connected(ident, "")
        self.link.uplink(ident, topic, payload)

    async def _on_presence(self, msg: Publish, connected: bool) -> None:
        topic = msg.topic
        try:
            body = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            log.info("presence event on %s is not a JSON object; ignored", topic[:120])
            return
        clientid = body.get("clientid")
        if not isinstance(clientid, str):
            clientid = topic.split("/")[-2]
        named = self._device_named(clientid, body.get("username"))
        if named is None:
            return  # not a device (the server itself, a tool…)
        found = await self._identity(*named)
        if found is None:
            return
        ident, _status = found
        key = ident.key
        self._presence_heard.add(key)
        sessions = self._sessions.setdefault(key, set())
        if connected:
            sessions.add(clientid)
            self._online.add(key)
            ip = body.get("ipaddress")
            self.link.device_connected(ident, ip if isinstance(ip, str) else "")
            return
        reason = body.get("reason")
        reason = reason if isinstance(reason, str) else "disconnected"
        if reason in TAKEOVER_REASONS:
            return  # the new connection's "connected" keeps it online
        sessions.discard(clientid)
        if sessions:
            return  # another connection of the same device is still up
        self._sessions.pop(key, None)
        self._online.discard(key)
        self.link.device_disconnected(ident, reason)

    @staticmethod
    def _device_named(clientid: str, username: Any) -> tuple[str, str] | None:
        if isinstance(username, str) and username:
            try:
                dn, pk = parse_username(username)
                return pk, dn
            except DeviceAuthError:
                return None
        try:
            return parse_client_id(clientid).claimed_identity
        except DeviceAuthError:
            return None

    # --- EMQX HTTP hooks ----------------------------------------------------------------------------
    def _is_server(self, username: str | None) -> bool:
        return bool(self.url.username) and username == self.url.username

    async def http_auth(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """EMQX HTTP authentication: ``{clientid, username, password}`` → ``{"result": "allow"|"deny"}``.

        The server's own broker user is allowed (as superuser) with its configured password; every
        other client is verified as a device exactly as by the embedded broker."""
        clientid, username, password = (body.get(k) for k in ("clientid", "username", "password"))
        if not isinstance(clientid, str) or not isinstance(username, str) or not isinstance(password, str):
            return {"result": "deny"}
        if self._is_server(username):
            ok = self.url.password is not None and hmac.compare_digest(password.encode(), self.url.password.encode())
            return {"result": "allow", "is_superuser": True} if ok else {"result": "deny"}
        try:
            await self.link.authenticate(Connect(client_id=clientid, username=username,
                                                 password=password.encode()), str(body.get("peerhost") or ""))
        except ConnectRefused as e:
            log.info("broker auth refused client %r: %s", clientid[:80], e.reason)
            return {"result": "deny"}
        return {"result": "allow", "is_superuser": False}

    async def http_acl(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """EMQX HTTP authorisation: ``{username, topic, action: publish|subscribe}`` → allow/deny by the
        device topic rules (``topics_acl.py``); the server's own user may do anything."""
        username, topic, action = (body.get(k) for k in ("username", "topic", "action"))
        if not isinstance(username, str) or not isinstance(topic, str) or action not in ("publish", "subscribe"):
            return {"result": "deny"}
        if self._is_server(username):
            return {"result": "allow"}
        try:
            dn, pk = parse_username(username)
        except DeviceAuthError:
            return {"result": "deny"}
        allowed = (device_may_publish(pk, dn, topic) if action == "publish"
                   else device_may_subscribe(pk, dn, topic))
        return {"result": "allow" if allowed else "deny"}
