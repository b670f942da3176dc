"""Asyncio MQTT 3.1.1 client on the sans-IO codec: one connection (MqttClient) and a reconnecting wrapper."""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import ssl as _ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, Literal, TypeVar, cast

from .packets import (
    CONNACK_ACCEPTED,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    PubRec,
    PubRel,
    Publish,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    encode,
)
from .parser import DEFAULT_MAX_PACKET_SIZE, MqttProtocolError, PacketReader

__all__ = [
    "MqttClient",
    "MqttConnectError",
    "MqttConnectionLost",
    "MqttError",
    "MqttTimeout",
    "OnConnected",
    "OnMessage",
    "ReconnectingClient",
]

log = logging.getLogger(__name__)

OnMessage = Callable[[Publish], Awaitable[None] | None]
OnConnected = Callable[["MqttClient", ConnAck], Awaitable[None] | None]
SslArg = _ssl.SSLContext | bool | None
_Ack = TypeVar("_Ack", PubAck, SubAck, UnsubAck)

_MAX_PACKET_ID: Final = 0xFFFF
_PINGREQ: Final = encode(PingReq())
_DISCONNECT: Final = encode(Disconnect())
_REFUSALS: Final = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class MqttError(Exception):
    """Base class of the client's errors."""


class MqttConnectError(MqttError):
    """The broker refused the CONNECT; ``return_code`` is the CONNACK return code (1..5)."""

    def __init__(self, return_code: int) -> None:
        super().__init__(f"connection refused: {_REFUSALS.get(return_code, f'code {return_code}')} ({return_code})")
        self.return_code = return_code


class MqttConnectionLost(MqttError):
    """The connection is not (or no longer) open; ``MqttClient.close_reason`` says why."""


class MqttTimeout(MqttError, TimeoutError):
    """The broker did not answer in time (CONNACK, PUBACK, SUBACK, UNSUBACK, or a full write buffer)."""


_State = Literal["new", "connecting", "connected", "closed"]


class MqttClient(asyncio.Protocol):
    """One MQTT 3.1.1 connection: ``connect`` once, use it, ``disconnect``; make a new client to reconnect.

    Incoming PUBLISHes are handed to ``on_message`` in arrival order by one dispatcher task (an
    awaitable result is awaited before the next message); QoS 1 is acknowledged once the message is
    queued for it, QoS 2 is delivered once (PUBREC/PUBCOMP handled). At most ``max_queued_messages``
    wait for the callback before reading from the socket is paused. Messages already queued when the
    connection closes are still delivered.

    Publishers are throttled by the transport's write buffer (``write_buffer_high``/``_low``): every
    send first waits, like ``StreamWriter.drain``, until the buffer is below the high-water mark.

    A PINGREQ goes out every ``keepalive`` seconds; without a PINGRESP within ``ping_timeout``
    (default ``max(keepalive / 2, 5)``) the connection is aborted. ``closed`` is set once the
    connection is gone; ``close_reason`` is None after a clean ``disconnect``, else an ``MqttError``.
    """

    def __init__(
        self,
        *,
        on_message: OnMessage | None = None,
        ack_timeout: float = 10.0,
        ping_timeout: float | None = None,
        write_buffer_high: int = 256 * 1024,
        write_buffer_low: int | None = None,
        max_queued_messages: int = 1000,
        max_inflight: int = _MAX_PACKET_ID,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
    ) -> None:
        if not 1 <= max_inflight <= _MAX_PACKET_ID:
            raise ValueError(f"max_inflight must be 1..{_MAX_PACKET_ID}")
        self.on_message = on_message
        self.ack_timeout = ack_timeout
        self.connack: ConnAck | None = None
        self.close_reason: MqttError | None = None
        self.closed = asyncio.Event()
        self._ping_timeout = ping_timeout
        self._write_high = write_buffer_high
        self._write_low = write_buffer_high // 4 if write_buffer_low is None else write_buffer_low
        self._queue_max = max(1, max_queued_messages)
        self._reader = PacketReader(max_packet_size, role="client")
        self._state: _State = "new"
        self._transport: asyncio.Transport | None = None
        self._connack_waiter: asyncio.Future[ConnAck] | None = None
        self._inflight: dict[int, asyncio.Future[Packet]] = {}
        self._slots = asyncio.Semaphore(max_inflight)
        self._next_id = 1
        self._qos2_ids: set[int] = set()
        self._messages: asyncio.Queue[Publish | None] = asyncio.Queue()
        self._reading_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._pong: asyncio.Future[None] | None = None
        self._keepalive = 0
        self._disconnecting = False
        self._dispatcher: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None

    # --- public API -----------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        """True between an accepted CONNACK and the loss of the connection."""
        return self._state == "connected"

    @property
    def ping_timeout(self) -> float:
        """Seconds to wait for a PINGRESP: as configured, else ``max(keepalive / 2, 5)``."""
        return self._ping_timeout if self._ping_timeout is not None else max(self._keepalive / 2, 5.0)

    async def connect(
        self,
        host: str,
        port: int = 1883,
        *,
        client_id: str,
        username: str | None = None,
        password: str | bytes | None = None,
        keepalive: int = 60,
        clean_session: bool = True,
        ssl: SslArg = None,
        timeout: float = 10.0,
        will: Publish | None = None,
    ) -> ConnAck:
        """Open the connection and send CONNECT; the accepted CONNACK, or ``MqttConnectError``.

        Also raises ``OSError`` (cannot connect), ``MqttTimeout`` (no CONNACK within ``timeout``)
        and ``MqttConnectionLost`` (closed before the CONNACK).
        """
        if self._state != "new":
            raise MqttError("an MqttClient connects only once; create a new one to reconnect")
        data = encode(
            Connect(
                client_id=client_id,
                username=username,
                password=password.encode() if isinstance(password, str) else password,
                keepalive=keepalive,
                clean_session=clean_session,
                will_topic=None if will is None else will.topic,
                will_payload=None if will is None else will.payload,
                will_qos=0 if will is None else will.qos,
                will_retain=False if will is None else will.retain,
            )
        )
        loop = asyncio.get_running_loop()
        self._state = "connecting"
        self._keepalive = keepalive
        waiter = self._connack_waiter = loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: self, host, port, ssl=ssl)
                self._write(data)
                connack = await waiter
        except BaseException as exc:
            if isinstance(exc, TimeoutError) and not isinstance(exc, MqttTimeout):
                error: BaseException = MqttTimeout(f"no CONNACK from {host}:{port} within {timeout:g}s")
            else:
                error = exc
            await self._fail_connect(error)
            if error is exc:
                raise
            raise error from None
        if connack.return_code != CONNACK_ACCEPTED:
            refused = MqttConnectError(connack.return_code)
            await self._fail_connect(refused)
            raise refused
        return connack

    async def publish(
        self,
        topic: str,
        payload: bytes | bytearray | memoryview = b"",
        qos: int = 0,
        retain: bool = False,
        *,
        timeout: float | None = None,
    ) -> None:
        """Send a PUBLISH; QoS 1 returns once the PUBACK arrives (``MqttTimeout`` after ``timeout``).

        ``timeout`` (default ``ack_timeout``) also bounds the wait for room in the write buffer.
        A QoS 1 packet id whose PUBACK timed out stays reserved until that PUBACK comes, so a late
        acknowledgement can never be taken for a newer message.
        """
        body = bytes(payload)
        if qos == 0:
            data = encode(Publish(topic, body, 0, retain))
            await self._drain_within(timeout)
            self._write(data)
        elif qos == 1:
            await self._request(lambda pid: Publish(topic, body, 1, retain, False, pid), PubAck, timeout)
        else:
            raise ValueError(f"publish supports QoS 0 and 1, not {qos!r}")

    async def subscribe(self, topics: Iterable[tuple[str, int]], *, timeout: float | None = None) -> list[int]:
        """SUBSCRIBE to (filter, qos) pairs; the SUBACK return codes (granted QoS or 0x80 failure)."""
        items = tuple((str(f), int(q)) for f, q in topics)
        if not items:
            raise ValueError("subscribe needs at least one (topic filter, qos)")
        ack = await self._request(lambda pid: Subscribe(pid, items), SubAck, timeout)
        if len(ack.return_codes) != len(items):
            self.abort(MqttConnectionLost("SUBACK return codes do not match the SUBSCRIBE"))
            raise MqttConnectionLost("SUBACK return codes do not match the SUBSCRIBE")
        return list(ack.return_codes)

    async def unsubscribe(self, topics: Iterable[str], *, timeout: float | None = None) -> None:
        """UNSUBSCRIBE from the filters; returns once the UNSUBACK arrives."""
        items = tuple(str(f) for f in topics)
        if not items:
            raise ValueError("unsubscribe needs at least one topic filter")
        await self._request(lambda pid: Unsubscribe(pid, items), UnsubAck, timeout)

    async def drain(self) -> None:
        """Wait until the write buffer is below its high-water mark; ``MqttConnectionLost`` if closed."""
        self._check_open()
        while self._write_paused:
            if self._drain_waiter is None or self._drain_waiter.done():
                self._drain_waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._drain_waiter)
            self._check_open()

    async def disconnect(self, timeout: float = 5.0) -> None:
        """Send DISCONNECT, flush and close; aborts if the flush takes longer than ``timeout``."""
        transport = self._transport
        if self._state == "new":
            self._state = "closed"
            self.close_reason = MqttConnectionLost("never connected")
            self.closed.set()
            return
        if self._state == "closed":
            return
        if self._state == "connecting" or transport is None:  # connect() in progress: make it fail
            self.abort(MqttConnectionLost("disconnect() called during connect"))
            await self.closed.wait()
            return
        self._disconnecting = True
        if not transport.is_closing():
            transport.write(_DISCONNECT)
            transport.close()
        try:
            async with asyncio.timeout(timeout):
                await self.closed.wait()
        except TimeoutError:
            transport.abort()
            await self.closed.wait()

    def abort(self, reason: MqttError | None = None) -> None:
        """Drop the connection at once (no DISCONNECT, so the broker publishes the will)."""
        if self.close_reason is None:
            self.close_reason = reason or MqttConnectionLost("aborted by the client")
        if self._transport is not None:
            self._transport.abort()

    async def wait_closed(self) -> MqttError | None:
        """Wait for the connection to close; the reason (None after a clean ``disconnect``)."""
        await self.closed.wait()
        return self.close_reason

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not isinstance(transport, asyncio.Transport): uvloop's transports (the server's loop)
        # implement that interface without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        if self.close_reason is not None:  # abort() or disconnect() came while the socket was opening
            transport.abort()
        transport.set_write_buffer_limits(high=self._write_high, low=self._write_low)
        self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())

    def data_received(self, data: bytes) -> None:
        try:
            packets = self._reader.feed(data)
        except MqttProtocolError as exc:
            self.abort(MqttConnectionLost(f"protocol error from the broker: {exc.reason}"))
            return
        for packet in packets:
            if self._state == "closed" or self._transport is None or self._transport.is_closing():
                return
            self._handle(packet)

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drainers()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._state == "closed":
            return
        self._state = "closed"
        if self.close_reason is None and not self._disconnecting:
            lost = MqttConnectionLost("connection closed by the broker" if exc is None else f"connection lost: {exc}")
            lost.__cause__ = exc
            self.close_reason = lost
        text = str(self.close_reason or "disconnected")
        waiter = self._connack_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(MqttConnectionLost(text))
        inflight, self._inflight = self._inflight, {}
        for fut in inflight.values():
            if not fut.done():
                fut.set_exception(MqttConnectionLost(text))
            self._slots.release()
        self._write_paused = False
        self._wake_drainers()
        if self._pinger is not None:
            self._pinger.cancel()
        self._messages.put_nowait(None)
        self.closed.set()

    # --- internals ------------------------------------------------------------------------------

    def _handle(self, packet: Packet) -> None:
        kind = type(packet)
        if self._state == "connecting":
            if kind is not ConnAck or self._connack_waiter is None or self._connack_waiter.done():
                self.abort(MqttConnectionLost(f"expected CONNACK, got {kind.__name__}"))
                return
            assert isinstance(packet, ConnAck)
            if packet.return_code == CONNACK_ACCEPTED:
                self._state = "connected"
                self.connack = packet
                if self._keepalive > 0:
                    self._pinger = asyncio.get_running_loop().create_task(self._keepalive_loop())
            self._connack_waiter.set_result(packet)
        elif kind is Publish:
            assert isinstance(packet, Publish)
            self._on_publish(packet)
        elif kind is PubAck or kind is SubAck or kind is UnsubAck:
            assert isinstance(packet, (PubAck, SubAck, UnsubAck))
            fut = self._inflight.pop(packet.packet_id, None)
            if fut is None:
                log.debug("MQTT %s for unknown packet id %d ignored", kind.__name__, packet.packet_id)
                return
            self._slots.release()
            if not fut.done():
                fut.set_result(packet)
        elif kind is PingResp:
            if self._pong is not None and not self._pong.done():
                self._pong.set_result(None)
        elif kind is PubRel:
            assert isinstance(packet, PubRel)
            self._qos2_ids.discard(packet.packet_id)
            self._write(encode(PubComp(packet.packet_id)))
        elif kind is ConnAck:
            self.abort(MqttConnectionLost("second CONNACK from the broker"))
        else:  # PUBREC/PUBCOMP: we never publish at QoS 2
            log.debug("MQTT unexpected %r ignored", packet)

    def _on_publish(self, msg: Publish) -> None:
        if msg.qos == 2:
            assert msg.packet_id is not None
            if msg.packet_id not in self._qos2_ids:
                self._qos2_ids.add(msg.packet_id)
                self._enqueue(msg)
            self._write(encode(PubRec(msg.packet_id)))
            return
        self._enqueue(msg)
        if msg.qos == 1:
            assert msg.packet_id is not None
            self._write(encode(PubAck(msg.packet_id)))

    def _enqueue(self, msg: Publish) -> None:
        self._messages.put_nowait(msg)
        if not self._reading_paused and self._messages.qsize() >= self._queue_max and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()

    async def _dispatch(self) -> None:
        queue = self._messages
        while True:
            msg = await queue.get()
            if msg is None:
                return
            if self._reading_paused and queue.qsize() <= self._queue_max // 2:
                self._reading_paused = False
                if self._transport is not None and not self._transport.is_closing():
                    self._transport.resume_reading()
            callback = self.on_message
            if callback is None:
                continue
            try:
                result = callback(msg)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("MQTT on_message callback failed for topic %r", msg.topic)

    async def _keepalive_loop(self) -> None:
        interval = self._keepalive
        wait = self.ping_timeout
        loop = asyncio.get_running_loop()
        while self._state == "connected":
            await asyncio.sleep(interval)
            pong = self._pong = loop.create_future()
            try:
                self._write(_PINGREQ)
            except MqttConnectionLost:
                return
            while True:
                done, _ = await asyncio.wait((pong,), timeout=wait)
                if done:
                    break
                if not self._reading_paused:  # a paused reader cannot see the PINGRESP yet
                    self.abort(MqttConnectionLost(f"no PINGRESP within {wait:g}s"))
                    return

    async def _request(self, build: Callable[[int], Packet], expect: type[_Ack], timeout: float | None) -> _Ack:
        limit = self.ack_timeout if timeout is None else timeout
        self._check_open()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(limit):
                await self._slots.acquire()
                sent = False
                try:
                    await self.drain()
                    pid = self._allocate_id()
                    try:
                        data = encode(build(pid))
                    except ValueError:
                        self._next_id = pid  # nothing was sent: the id is not used up
                        raise
                    self._write(data)
                    fut: asyncio.Future[Packet] = loop.create_future()
                    self._inflight[pid] = fut
                    sent = True
                finally:
                    if not sent:
                        self._slots.release()
                ack = await fut  # cancelled on timeout: the id stays reserved until its ack or close
        except TimeoutError as exc:
            if isinstance(exc, MqttTimeout):
                raise
            raise MqttTimeout(f"no {expect.__name__} within {limit:g}s") from None
        if not isinstance(ack, expect):
            self.abort(MqttConnectionLost(f"got {type(ack).__name__} for a packet awaiting {expect.__name__}"))
            raise MqttConnectionLost(str(self.close_reason))
        return ack

    def _allocate_id(self) -> int:
        pid = self._next_id
        while pid in self._inflight:  # a free id exists: we hold one of at most 65535 slots
            pid = pid % _MAX_PACKET_ID + 1
        self._next_id = pid % _MAX_PACKET_ID + 1
        return pid

    async def _drain_within(self, timeout: float | None) -> None:
        if not self._write_paused:
            self._check_open()
            return
        limit = self.ack_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                await self.drain()
        except TimeoutError:
            raise MqttTimeout(f"write buffer still full after {limit:g}s") from None

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise MqttConnectionLost(str(self.close_reason or "not connected"))
        transport.write(data)

    def _check_open(self) -> None:
        if self._state != "connected":
            if self._state == "closed":
                raise MqttConnectionLost(str(self.close_reason or "disconnected"))
            raise MqttConnectionLost("not connected")

    def _wake_drainers(self) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _fail_connect(self, error: BaseException) -> None:
        if self.close_reason is None:
            self.close_reason = error if isinstance(error, MqttError) else MqttConnectionLost(f"connect failed: {error!r}")
        if self._transport is not None and self._state != "closed":
            self._transport.abort()
            await self.closed.wait()  # connection_lost runs on the next loop iteration
        elif self._state != "closed":
            self._state = "closed"
            self.closed.set()


class ReconnectingClient:
    """Keeps an ``MqttClient`` connected to one broker until ``close()``.

    Reconnects with exponential backoff (``backoff_min`` × ``backoff_factor``^attempt, capped at
    ``backoff_max``, minus up to ``jitter`` of it, never below ``backoff_min``); the attempt count
    resets once a connection stayed up ``stable_after`` seconds. After each connect it re-subscribes
    every recorded subscription, awaits ``on_connected(client, connack)`` (use that client there),
    then sets ``connected``. ``subscribe``/``unsubscribe`` are recorded and retried across
    reconnects until acknowledged; ``publish`` waits for a connection but is not retried.
    """

    def __init__(
        self,
        host: str,
        port: int = 1883,
        *,
        client_id: str,
        username: str | None = None,
        password: str | bytes | None = None,
        keepalive: int = 60,
        clean_session: bool = True,
        ssl: SslArg = None,
        will: Publish | None = None,
        connect_timeout: float = 10.0,
        on_message: OnMessage | None = None,
        on_connected: OnConnected | None = None,
        backoff_min: float = 1.0,
        backoff_max: float = 60.0,
        backoff_factor: float = 2.0,
        jitter: float = 0.5,
        stable_after: float = 10.0,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        if not 0 < backoff_min <= backoff_max or backoff_factor < 1 or not 0 <= jitter <= 1:
            raise ValueError("need 0 < backoff_min <= backoff_max, backoff_factor >= 1, 0 <= jitter <= 1")
        self.on_message = on_message
        self.on_connected = on_connected
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.backoff_factor = backoff_factor
        self.jitter = jitter
        self.stable_after = stable_after
        self.connected = asyncio.Event()
        self.client: MqttClient | None = None
        self.last_error: BaseException | None = None
        self._host = host
        self._port = port
        self._connect_args: dict[str, Any] = dict(
            client_id=client_id,
            username=username,
            password=password,
            keepalive=keepalive,
            clean_session=clean_session,
            ssl=ssl,
            will=will,
            timeout=connect_timeout,
        )
        self._client_options = dict(client_options or {})
        self._subscriptions: dict[str, int] = {}
        self._applied: dict[str, tuple[int, int]] = {}  # filter -> (requested qos, return code) on self.client
        self._changed = asyncio.Event()
        self._stop = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ReconnectingClient:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def subscriptions(self) -> dict[str, int]:
        """The recorded subscriptions (filter -> requested QoS), re-applied on every connect."""
        return dict(self._subscriptions)

    def start(self) -> None:
        """Start connecting in the background (idempotent)."""
        if self._closing:
            raise MqttError("ReconnectingClient is closed")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Disconnect cleanly and stop reconnecting."""
        self._closing = True
        self._stop.set()
        self._notify()
        client = self.client
        if client is not None:
            await client.disconnect()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.connected.clear()
        self.client = None

    def backoff_delay(self, attempt: int) -> float:
        """Seconds to wait before reconnect attempt number ``attempt`` (0-based), jitter included."""
        base = min(self.backoff_max, self.backoff_min * self.backoff_factor ** min(attempt, 64))
        return max(self.backoff_min, random.uniform(base * (1 - self.jitter), base))

    async def wait_connected(self, timeout: float | None = None) -> MqttClient:
        """The connected client, waiting up to ``timeout`` for one (``MqttTimeout``)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if self._closing:
                        raise MqttConnectionLost("ReconnectingClient is closed")
                    changed = self._changed
                    client = self.client
                    if self.connected.is_set() and client is not None and client.is_connected:
                        return client
                    await changed.wait()
        except TimeoutError as exc:
            if isinstance(exc, MqttTimeout):
                raise
            raise MqttTimeout(f"not connected within {timeout:g}s") from None

    async def publish(
        self,
        topic: str,
        payload: bytes | bytearray | memoryview = b"",
        qos: int = 0,
        retain: bool = False,
        *,
        timeout: float | None = None,
    ) -> None:
        """Publish on the current connection, waiting up to ``timeout`` for one (None: no limit)."""
        client = await self.wait_connected(timeout)
        await client.publish(topic, payload, qos, retain, timeout=timeout)

    async def subscribe(self, topics: Iterable[tuple[str, int]], *, timeout: float | None = None) -> list[int]:
        """Record the subscriptions and wait until a connection acknowledged them; the return codes."""
        items = [(str(f), int(q)) for f, q in topics]
        if not items:
            raise ValueError("subscribe needs at least one (topic filter, qos)")
        for f, q in items:
            self._subscriptions[f] = q
        try:
            async with asyncio.timeout(timeout):
                while True:
                    client = await self.wait_connected()
                    missing = [(f, q) for f, q in items if self._applied.get(f, (None, 0))[0] != q]
                    if missing:
                        try:
                            codes = await client.subscribe(missing)
                        except MqttConnectionLost:
                            continue
                        if client is self.client:
                            self._applied.update({f: (q, c) for (f, q), c in zip(missing, codes)})
                    if all(f in self._applied for f, _ in items):
                        return [self._applied[f][1] for f, _ in items]
        except TimeoutError as exc:
            if isinstance(exc, MqttTimeout):
                raise
            raise MqttTimeout(f"subscription not acknowledged within {timeout:g}s") from None

    async def unsubscribe(self, topics: Iterable[str], *, timeout: float | None = None) -> None:
        """Forget the subscriptions and wait until a connection acknowledged the UNSUBSCRIBE."""
        items = [str(f) for f in topics]
        for f in items:
            self._subscriptions.pop(f, None)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    client = await self.wait_connected()
                    try:
                        await client.unsubscribe(items)
                    except MqttConnectionLost:
                        continue
                    for f in items:
                        self._applied.pop(f, None)
                    return
        except TimeoutError as exc:
            if isinstance(exc, MqttTimeout):
                raise
            raise MqttTimeout(f"unsubscribe not acknowledged within {timeout:g}s") from None

    # --- internals ------------------------------------------------------------------------------

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _deliver(self, msg: Publish) -> Awaitable[None] | None:
        callback = self.on_message
        return None if callback is None else callback(msg)

    async def _sleep(self, delay: float) -> None:
        try:
            async with asyncio.timeout(delay):
                await self._stop.wait()
        except TimeoutError:
            pass

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while not self._closing:
            client = MqttClient(on_message=self._deliver, **self._client_options)
            try:
                connack = await client.connect(self._host, self._port, **self._connect_args)
            except (OSError, MqttError) as exc:
                self.last_error = exc
                delay = self.backoff_delay(attempt)
                attempt += 1
                log.warning("MQTT connect to %s:%d failed (%s); retrying in %.1fs", self._host, self._port, exc, delay)
                await self._sleep(delay)
                continue
            up_since = loop.time()
            self.client = client
            self._applied = {}
            try:
                subs = list(self._subscriptions.items())
                if subs:
                    codes = await client.subscribe(subs)
                    self._applied = {f: (q, c) for (f, q), c in zip(subs, codes)}
                if self.on_connected is not None:
                    result = self.on_connected(client, connack)
                    if inspect.isawaitable(result):
                        await result
            except MqttConnectionLost:
                pass
            except Exception as exc:  # a timed-out SUBSCRIBE or a failing on_connected: start over
                log.exception("MQTT session setup failed; reconnecting")
                client.abort(MqttConnectionLost(f"session setup failed: {exc!r}"))
            if client.is_connected:
                self.connected.set()
                self._notify()
                log.info("MQTT connected to %s:%d", self._host, self._port)
            reason = await client.wait_closed()
            self.connected.clear()
            self.client = None
            self._notify()
            if self._closing:
                return
            self.last_error = reason
            if loop.time() - up_since >= self.stable_after:
                attempt = 0
            delay = self.backoff_delay(attempt)
            attempt += 1
            log.warning("MQTT connection to %s:%d lost (%s); reconnecting in %.1fs", self._host, self._port, reason, delay)
            await self._sleep(delay)
