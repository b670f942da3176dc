"""The embedded MQTT broker for devices: asyncio Protocols over the sans-IO codec.

It is not a general-purpose broker. Devices talk to the cloud, never to each other
(as on the IoT platform): a device's PUBLISH goes to the server's ``on_publish`` hook
after the ACL check, and the server's messages go to one device with ``deliver`` (the
device need not have subscribed: implicit delivery) or to the devices subscribed to a
topic with ``publish``. Who may connect and what they may do is decided by the
``BrokerHooks`` the device link provides.

Rules kept here:
* the first packet must be CONNECT, within ``connect_timeout``; authentication is
  async, packets arriving meanwhile wait (reading is paused);
* at most ``max_pending_auth`` authentications run at once: a CONNECT beyond that (a
  reconnect storm after an outage) gets CONNACK 3 "server unavailable" at once, and the
  device retries with its back-off, instead of every CONNECT queueing on the store;
* a second connection with the same identity replaces the first;
* a connection silent for 1.5 × its keep-alive is closed (keep-alive 0: never), by a timer
  of its own (re-armed for what is left when it fires early: O(1) per period, no sweep);
* any protocol error closes that connection only; a slow reader's QoS 0 messages are
  dropped once its write buffer is over ``max_write_buffer`` (counted), never queued
  without bound.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from iotvideo.devicelink.mqtt import (
    CONNACK_ACCEPTED,
    CONNACK_SERVER_UNAVAILABLE,
    SUBACK_FAILURE,
    ConnAck,
    Connect,
    Disconnect,
    MqttProtocolError,
    PacketReader,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    PubRel,
    PubComp,
    PubRec,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    encode,
)
from iotvideo.devicelink.mqtt.topics import TopicTrie, topic_matches

log = logging.getLogger("iotvideo.broker")

PING_RESP = encode(PingResp())


@dataclass(frozen=True)
class Identity:
    """Who a connection is: ``key`` is unique per device (its IotId)."""

    key: str
    product_key: str
    device_name: str
    tenant_id: str = ""


class ConnectRefused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class BrokerHooks(Protocol):
    async def authenticate(self, connect: Connect, peer: str) -> Identity: ...
    def may_publish(self, ident: Identity, topic: str) -> bool: ...
    def may_subscribe(self, ident: Identity, topic_filter: str) -> bool: ...
    def on_connected(self, session: "Session") -> None: ...
    def on_disconnected(self, session: "Session", reason: str, replaced: bool) -> None: ...
    def on_publish(self, session: "Session", publish: Publish) -> None: ...


@dataclass
class BrokerStats:
    connections: int = 0
    refused: int = 0
    shed: int = 0  # CONNECTs answered "server unavailable" because too many were authenticating
    protocol_errors: int = 0
    denied_publishes: int = 0
    dropped_slow: int = 0
    messages_in: int = 0
    messages_out: int = 0


@dataclass
class BrokerLimits:
    max_packet_size: int = 256 * 1024
    connect_timeout: float = 10.0
    max_write_buffer: int = 1024 * 1024
    max_subscriptions: int = 64
    max_pending_auth: int = 512  # CONNECTs being authenticated at once; more get CONNACK 3


class Session(asyncio.Protocol):
    """One device connection."""

    __slots__ = ("broker", "reader", "transport", "identity", "peer", "keepalive", "last_rx", "connected_at",
                 "client_id", "subscriptions", "_pending", "_authenticating", "_closed", "_finished", "_next_id",
                 "_close_reason", "_replaced", "_connect_timer", "_keepalive_timer")

    def __init__(self, broker: "Broker") -> None:
        self.broker = broker
        self.reader = PacketReader(broker.limits.max_packet_size, role="server")
        self.transport: asyncio.Transport | None = None
        self.identity: Identity | None = None
        self.peer = ""
        self.keepalive = 0
        self.last_rx = time.monotonic()
        self.connected_at = 0.0
        self.client_id = ""
        self.subscriptions: dict[str, int] = {}
        self._pending: list[object] = []
        self._authenticating = False
        self._closed = False
        self._finished = False
        self._next_id = 0
        self._close_reason = "connection lost"
        self._replaced = False
        self._connect_timer: asyncio.TimerHandle | None = None
        self._keepalive_timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  (uvloop's is no asyncio.Transport subclass)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else str(peer or "")
        if self.broker.closing:
            transport.abort()
            return
        transport.set_write_buffer_limits(high=self.broker.limits.max_write_buffer)
        self.broker.stats.connections += 1
        self.broker.open_sessions.add(self)
        self._connect_timer = asyncio.get_running_loop().call_later(
            self.broker.limits.connect_timeout, self._connect_timeout)

    def _connect_timeout(self) -> None:
        if self.identity is None:
            self.close("no CONNECT in time")

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        try:
            packets = self.reader.feed(data)
        except MqttProtocolError as e:
            self.broker.stats.protocol_errors += 1
            if self.identity is None and not self._authenticating and e.connack_code is not None:
                self._write(encode(ConnAck(False, e.connack_code)))
            self.close(f"protocol error: {e.reason}")
            return
        for p in packets:
            if self._closed:
                return
            if self._authenticating:
                self._pending.append(p)
            else:
                self._handle(p)

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(self._close_reason if self._closed else "connection lost")

    # --- packets ---
    def _handle(self, p: object) -> None:
        if self.identity is None:
            if not isinstance(p, Connect):
                self.close("first packet is not CONNECT")
                return
            self._start_auth(p)
            return
        if isinstance(p, Publish):
            self._on_publish(p)
        elif isinstance(p, PingReq):
            self._write(PING_RESP)
        elif isinstance(p, PubAck):
            pass  # our QoS 1 deliveries are fire-and-forget once written
        elif isinstance(p, Subscribe):
            self._on_subscribe(p)
        elif isinstance(p, Unsubscribe):
            for f in p.topics:
                if self.subscriptions.pop(f, None) is not None:
                    self.broker.trie.remove(f, self)
            self._write(encode(UnsubAck(p.packet_id)))
        elif isinstance(p, PubRel):
            self._write(encode(PubComp(p.packet_id)))
        elif isinstance(p, (PubRec, PubComp)):
            pass
        elif isinstance(p, Disconnect):
            self.close("client disconnected")
        elif isinstance(p, Connect):
            self.close("second CONNECT")
        else:
            self.close(f"unexpected {type(p).__name__}")

    def _start_auth(self, c: Connect) -> None:
        broker = self.broker
        if broker.pending_auth >= broker.limits.max_pending_auth:
            broker.stats.shed += 1
            if broker.stats.shed % 1000 == 1:
                log.warning("mqtt: %d CONNECTs authenticating, shedding new ones (CONNACK 3); %d shed so far",
                            broker.pending_auth, broker.stats.shed)
            self._write(encode(ConnAck(False, CONNACK_SERVER_UNAVAILABLE)))
            self.close("server busy: too many CONNECTs authenticating")
            return
        broker.pending_auth += 1
        self._authenticating = True
        self.client_id = c.client_id
        self.keepalive = c.keepalive
        if self.transport is not None:
            self.transport.pause_reading()
        task = asyncio.ensure_future(self._auth(c))
        self.broker._tasks.add(task)
        task.add_done_callback(self.broker._tasks.discard)

    async def _auth(self, c: Connect) -> None:
        try:
            try:
                ident = await self.broker.hooks.authenticate(c, self.peer)
            finally:
                self.broker.pending_auth -= 1
        except ConnectRefused as e:
            self.broker.stats.refused += 1
            log.info("mqtt connect refused peer=%s client_id=%r username=%r code=%d reason=%s", self.peer,
                     c.client_id[:128], (c.username or "")[:128], e.code, e.reason)
            self._write(encode(ConnAck(False, e.code)))
            self.close(f"refused: {e.reason}")
            return
        except Exception:
            log.exception("mqtt authentication failed")
            self._write(encode(ConnAck(False, CONNACK_SERVER_UNAVAILABLE)))
            self.close("authentication error")
            return
        if self._closed:
            return
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None
        self.identity = ident
        if self.keepalive:
            self._arm_keepalive(1.5 * self.keepalive)
        self.connected_at = time.time()
        self.broker._register(self)
        self._write(encode(ConnAck(False, CONNACK_ACCEPTED)))
        self.broker.hooks.on_connected(self)
        self._authenticating = False
        pending, self._pending = self._pending, []
        for p in pending:
            if self._closed:
                return
            self._handle(p)
        if self.transport is not None and not self._closed:
            self.transport.resume_reading()

    def _on_publish(self, p: Publish) -> None:
        assert self.identity is not None
        if p.qos == 1 and p.packet_id is not None:
            self._write(encode(PubAck(p.packet_id)))
        elif p.qos == 2 and p.packet_id is not None:
            self._write(encode(PubRec(p.packet_id)))
        if not self.broker.hooks.may_publish(self.identity, p.topic):
            self.broker.stats.denied_publishes += 1
            log.debug("mqtt publish denied iot_id=%s topic=%r", self.identity.key, p.topic[:200])
            return
        self.broker.stats.messages_in += 1
        try:
            self.broker.hooks.on_publish(self, p)
        except Exception:
            log.exception("on_publish failed for %s", self.identity.key)

    def _on_subscribe(self, p: Subscribe) -> None:
        assert self.identity is not None
        codes: list[int] = []
        for f, qos in p.topics:
            if (self.broker.hooks.may_subscribe(self.identity, f)
                    and (f in self.subscriptions or len(self.subscriptions) < self.broker.limits.max_subscriptions)):
                granted = min(qos, 1)
                if f not in self.subscriptions:
                    self.broker.trie.add(f, self)
                self.subscriptions[f] = granted
                codes.append(granted)
            else:
                codes.append(SUBACK_FAILURE)
        self._write(encode(SubAck(p.packet_id, tuple(codes))))

    # --- keep-alive: one timer per session, re-armed for what is left when it fires early ---
    def _arm_keepalive(self, delay: float) -> None:
        self._keepalive_timer = asyncio.get_running_loop().call_later(delay, self._check_keepalive)

    def _check_keepalive(self) -> None:
        self._keepalive_timer = None
        if self._closed:
            return
        left = self.last_rx + 1.5 * self.keepalive - time.monotonic()
        if left <= 0:
            self.close("keep-alive timeout")
        else:
            self._arm_keepalive(left)

    # --- output ---
    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self._closed:
            self.transport.write(data)

    def send(self, topic: str, payload: bytes, qos: int = 0) -> bool:
        """Queues a PUBLISH to this device; False if the connection is gone or too slow."""
        if self._closed or self.transport is None or self.identity is None:
            return False
        if self.transport.get_write_buffer_size() > self.broker.limits.max_write_buffer:
            self.broker.stats.dropped_slow += 1
            return False
        pid = None
        if qos:
            self._next_id = self._next_id % 65535 + 1
            pid = self._next_id
        self.transport.write(encode(Publish(topic, payload, qos=qos, packet_id=pid)))
        self.broker.stats.messages_out += 1
        return True

    def close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        if self.transport is not None:
            self.transport.close()
        else:
            self._finish(reason)

    def _finish(self, reason: str) -> None:
        for timer in (self._connect_timer, self._keepalive_timer):
            if timer is not None:
                timer.cancel()
        self._connect_timer = self._keepalive_timer = None
        if self._finished:
            return
        self._finished = True
        self._closed = True
        self.broker.open_sessions.discard(self)
        self.broker._unregister(self, reason, self._replaced)


class Broker:
    def __init__(self, hooks: BrokerHooks, limits: BrokerLimits | None = None) -> None:
        self.hooks = hooks
        self.limits = limits or BrokerLimits()
        self.sessions: dict[str, Session] = {}  # authenticated, by device
        self.open_sessions: set[Session] = set()  # every open connection, authenticating ones included
        self.closing = False
        self.trie: TopicTrie[Session] = TopicTrie()
        self.stats = BrokerStats()
        self.pending_auth = 0  # CONNECTs whose authentication is running
        self._servers: list[asyncio.base_events.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def listen(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
        """Starts accepting on host:port; returns the bound port (0 picks a free one)."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Session(self), host, port, ssl=ssl_context,
                                          backlog=4096, reuse_address=True)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def close(self, timeout: float = 5.0) -> None:
        """Stops accepting and closes every connection, those still authenticating too; a peer
        that has not let its connection close within ``timeout`` seconds is cut off."""
        self.closing = True
        for s in self._servers:
            s.close()
        for t in list(self._tasks):
            t.cancel()
        for session in list(self.open_sessions):
            session.close("server shutting down")
        try:
            await asyncio.wait_for(asyncio.gather(*(s.wait_closed() for s in self._servers)), timeout)
        except TimeoutError:
            for session in list(self.open_sessions):
                if session.transport is not None:
                    session.transport.abort()
            await asyncio.gather(*(s.wait_closed() for s in self._servers))

    # --- sessions ---
    def _register(self, session: Session) -> None:
        assert session.identity is not None
        old = self.sessions.get(session.identity.key)
        if old is not None and old is not session:
            old._replaced = True
            old.close("replaced by a new connection")
        self.sessions[session.identity.key] = session

    def _unregister(self, session: Session, reason: str, replaced: bool) -> None:
        for f in session.subscriptions:
            self.trie.remove(f, session)
        session.subscriptions.clear()
        if session.identity is None:
            return
        if self.sessions.get(session.identity.key) is session:
            del self.sessions[session.identity.key]
        try:
            self.hooks.on_disconnected(session, reason, replaced)
        except Exception:
            log.exception("on_disconnected failed")

    def session(self, key: str) -> Session | None:
        return self.sessions.get(key)

    def deliver(self, key: str, topic: str, payload: bytes, qos: int = 0) -> bool:
        """Sends to one connected device whether or not it subscribed (implicit delivery)."""
        s = self.sessions.get(key)
        return s.send(topic, payload, qos) if s is not None else False

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> int:
        """Sends to every device subscribed to a matching filter; returns how many."""
        n = 0
        for s in self.trie.match(topic):
            granted = max((q for f, q in s.subscriptions.items() if topic_matches(f, topic)), default=0)
            n += s.send(topic, payload, min(qos, granted))
        return n

    def is_connected(self, key: str) -> bool:
        return key in self.sessions

    def kick(self, key: str, reason: str) -> bool:
        s = self.sessions.get(key)
        if s is None:
            return False
        s.close(reason)
        return True

    def connected_keys(self) -> Iterable[str]:
        return self.sessions.keys()
