"""The asyncio MQTT client against the local Mosquitto, a killable TCP proxy, and a fake broker built from the codec."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from iotvideo.devicelink.mqtt import (
    CONNACK_NOT_AUTHORIZED,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PacketReader,
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
from iotvideo.devicelink.mqtt.client import (
    MqttClient,
    MqttConnectError,
    MqttConnectionLost,
    MqttTimeout,
    ReconnectingClient,
)

BROKER = ("127.0.0.1", 1883)
T = TypeVar("T")
P = TypeVar("P")


def run(coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
    """Run one test body on a fresh loop; nothing may take longer than ``timeout``."""

    async def main() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(main())


def uid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def mosquitto() -> tuple[str, int]:
    try:
        socket.create_connection(BROKER, timeout=1).close()
    except OSError:
        pytest.skip("nothing listens on 127.0.0.1:1883 (these tests need Mosquitto 2.0 with allow_anonymous true)")
    return BROKER


class Inbox:
    """An on_message callback collecting messages, with an awaitable 'got n' condition."""

    def __init__(self) -> None:
        self.messages: list[Publish] = []
        self._changed = asyncio.Event()

    def __call__(self, msg: Publish) -> None:
        self.messages.append(msg)
        self._changed.set()

    async def wait_for(self, n: int, timeout: float = 3.0) -> list[Publish]:
        async with asyncio.timeout(timeout):
            while len(self.messages) < n:
                self._changed.clear()
                await self._changed.wait()
        return self.messages

    @property
    def payloads(self) -> list[bytes]:
        return [m.payload for m in self.messages]


async def connected(inbox: Callable[[Publish], Any] | None = None, **kwargs: Any) -> MqttClient:
    client = MqttClient(on_message=inbox)
    await client.connect(*BROKER, client_id=uid("c"), timeout=3, **kwargs)
    return client


# --- against Mosquitto --------------------------------------------------------------------------


def test_connect_subscribe_publish_qos0_and_qos1_to_self(mosquitto: tuple[str, int]) -> None:
    async def body() -> None:
        inbox = Inbox()
        client = MqttClient(on_message=inbox)
        connack = await client.connect(*mosquitto, client_id=uid("c"), timeout=3)
        assert connack == ConnAck(False, 0) and client.is_connected
        base = uid("self")
        assert await client.subscribe([(f"{base}/#", 1), (f"{base}/q0", 0)]) == [1, 0]
        await client.publish(f"{base}/a", b"zero", qos=0)
        await client.publish(f"{base}/a", b"one", qos=1)
        await client.publish(f"{base}/a", bytearray(b"two"), qos=1)
        got = await inbox.wait_for(3)
        assert [(m.topic, m.payload, m.qos) for m in got] == [
            (f"{base}/a", b"zero", 0),
            (f"{base}/a", b"one", 1),
            (f"{base}/a", b"two", 1),
        ]
        await client.unsubscribe([f"{base}/#"])
        await client.publish(f"{base}/a", b"after", qos=1)
        await client.publish(f"{base}/q0", b"still", qos=1)  # only the QoS 0 filter remains
        await inbox.wait_for(4)
        assert (inbox.messages[3].payload, inbox.messages[3].qos) == (b"still", 0)
        await client.disconnect()
        assert client.closed.is_set() and await client.wait_closed() is None
        with pytest.raises(MqttConnectionLost):
            await client.publish(f"{base}/a", b"late")

    run(body())


def test_async_callback_keeps_order(mosquitto: tuple[str, int]) -> None:
    async def body() -> None:
        seen: list[bytes] = []

        async def slow(msg: Publish) -> None:
            await asyncio.sleep(0.002 if int(msg.payload) % 3 == 0 else 0)
            seen.append(msg.payload)

        sub = await connected(slow)
        pub = await connected()
        topic = uid("order")
        await sub.subscribe([(topic, 1)])
        payloads = [str(i).encode() for i in range(200)]
        # one QoS throughout: Mosquitto may let QoS 0 overtake QoS 1 messages queued for a client
        await asyncio.gather(*(pub.publish(topic, p, qos=1) for p in payloads[:100]))
        for p in payloads[100:]:
            await pub.publish(topic, p, qos=1)
        async with asyncio.timeout(5):
            while len(seen) < 200:
                await asyncio.sleep(0.01)
        assert seen == payloads
        await asyncio.gather(sub.disconnect(), pub.disconnect())

    run(body())


def test_shared_subscription_splits_messages(mosquitto: tuple[str, int]) -> None:
    async def body() -> None:
        topic = uid("shared")
        inboxes = [Inbox(), Inbox()]
        members = [await connected(box) for box in inboxes]
        for m in members:
            assert await m.subscribe([(f"$share/g/{topic}/#", 1)]) == [1]
        pub = await connected()
        sent = [f"m{i}".encode() for i in range(40)]
        for p in sent:
            await pub.publish(f"{topic}/x", p, qos=1)
        async with asyncio.timeout(5):
            while sum(len(b.messages) for b in inboxes) < len(sent):
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # nothing extra (no duplicates) may arrive
        a, b = (set(box.payloads) for box in inboxes)
        assert a and b and not a & b and a | b == set(sent)
        assert len(inboxes[0].messages) + len(inboxes[1].messages) == len(sent)
        await asyncio.gather(*(c.disconnect() for c in [*members, pub]))

    run(body())


def test_keepalive_keeps_an_idle_connection_open(mosquitto: tuple[str, int]) -> None:
    async def body() -> None:
        inbox = Inbox()
        # Mosquitto drops a client silent for 1.5 x keepalive; PINGREQs every second prevent that.
        client = await connected(inbox, keepalive=1)
        topic = uid("ka")
        await client.subscribe([(topic, 0)])
        await asyncio.sleep(2.6)
        assert client.is_connected
        await client.publish(topic, b"alive", qos=1)
        await inbox.wait_for(1)
        await client.disconnect()
        assert client.close_reason is None

    run(body())


def test_will_is_published_when_the_client_aborts(mosquitto: tuple[str, int]) -> None:
    async def body() -> None:
        topic = uid("will")
        inbox = Inbox()
        watcher = await connected(inbox)
        await watcher.subscribe([(topic, 1)])
        device = await connected(will=Publish(topic, b"offline", qos=1))
        device.abort()
        assert isinstance(await device.wait_closed(), MqttConnectionLost)
        assert (await inbox.wait_for(1))[0].payload == b"offline"
        await watcher.disconnect()

    run(body())


def test_publisher_is_throttled_by_the_write_buffer(mosquitto: tuple[str, int]) -> None:
    """A peer that stops reading makes publish() wait instead of growing the buffer without bound."""

    async def body() -> None:
        paused: list[asyncio.Transport] = []

        class SlowReader(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                assert isinstance(transport, asyncio.Transport)
                self.transport = transport
                self.reader = PacketReader(role="server")

            def data_received(self, data: bytes) -> None:
                for p in self.reader.feed(data):
                    if isinstance(p, Connect):
                        self.transport.write(encode(ConnAck()))
                        self.transport.pause_reading()
                        paused.append(self.transport)

        server = await asyncio.get_running_loop().create_server(SlowReader, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        high = 64 * 1024
        client = MqttClient(write_buffer_high=high, ack_timeout=5)
        await client.connect("127.0.0.1", port, client_id="slow", timeout=3)
        chunk = b"x" * 32 * 1024
        sent = 0

        async def flood() -> None:
            nonlocal sent
            while sent < 4000:  # 125 MiB: far more than the kernel socket buffers hold
                await client.publish("flood", chunk)
                sent += 1

        task = asyncio.create_task(flood())
        last = -1
        while sent != last:  # wait until the publisher stalls
            last = sent
            await asyncio.sleep(0.2)
        assert not task.done() and sent < 4000
        assert client._transport is not None and client._transport.get_write_buffer_size() <= high + len(chunk) + 64
        with pytest.raises(MqttTimeout):
            await client.publish("flood", b"", timeout=0.05)
        paused[0].resume_reading()
        await asyncio.wait_for(task, 8)
        assert sent == 4000
        client.abort()
        paused[0].abort()
        server.close()
        await server.wait_closed()

    run(body(), timeout=15)


# --- reconnecting through a killable proxy ------------------------------------------------------


class Proxy:
    """A TCP relay to Mosquitto that can drop every relayed connection and stop/restart listening."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._handlers: set[asyncio.Task[Any]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.append(writer)
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._writers.append(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def drop(self) -> None:
        for w in self._writers:
            w.transport.abort()
        self._writers.clear()

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        self.drop()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        self._handlers.clear()
        await self._server.wait_closed()


def test_reconnects_and_resubscribes_after_the_connection_drops(mosquitto: tuple[str, int]) -> None:
    async def body() -> None:
        proxy = Proxy(mosquitto)
        port = await proxy.start()
        topic = uid("rc")
        inbox = Inbox()
        setups: list[bool] = []
        rc = ReconnectingClient(
            "127.0.0.1",
            port,
            client_id=uid("rc"),
            on_message=inbox,
            on_connected=lambda client, connack: setups.append(connack.session_present),
            backoff_min=0.05,
            backoff_max=0.2,
        )
        pub = await connected()
        async with rc:
            assert await rc.subscribe([(topic, 1)], timeout=3) == [1]
            assert rc.connected.is_set() and setups == [False]
            await pub.publish(topic, b"before", qos=1)
            await inbox.wait_for(1)

            proxy.drop()  # the broker side goes away
            async with asyncio.timeout(2):
                while rc.connected.is_set():
                    await asyncio.sleep(0.01)
            await rc.wait_connected(timeout=3)
            assert len(setups) == 2 and proxy.accepted == 2
            await pub.publish(topic, b"after", qos=1)
            await inbox.wait_for(2)

            await proxy.stop()  # now nothing listens: connects are refused and retried with backoff
            await asyncio.sleep(0.4)
            assert not rc.connected.is_set() and isinstance(rc.last_error, OSError)
            with pytest.raises(MqttTimeout):
                await rc.publish(topic, b"nowhere", timeout=0.05)
            await proxy.start()  # same port again
            await rc.publish(topic, b"back", qos=1, timeout=3)
            await inbox.wait_for(3)
            assert inbox.payloads == [b"before", b"after", b"back"]
            await rc.unsubscribe([topic], timeout=3)
            assert rc.subscriptions == {}
        assert not rc.connected.is_set() and rc.client is None
        await pub.disconnect()
        await proxy.stop()

    run(body(), timeout=15)


def test_close_stops_a_client_that_cannot_connect() -> None:
    async def body() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # bound but not listening: connection refused
            rc = ReconnectingClient("127.0.0.1", port, client_id="nobody", backoff_min=0.05, backoff_max=0.1)
            rc.start()
            await asyncio.sleep(0.3)
            assert isinstance(rc.last_error, OSError) and not rc.connected.is_set()
            waiter = asyncio.create_task(rc.wait_connected())
            await asyncio.wait_for(rc.close(), 1)
            with pytest.raises(MqttConnectionLost):
                await asyncio.wait_for(waiter, 1)

    run(body())


def test_backoff_is_exponential_jittered_and_bounded() -> None:
    async def body() -> None:
        rc = ReconnectingClient("127.0.0.1", client_id="x")
        for attempt in range(12):
            base = min(60.0, 2.0**attempt)
            for _ in range(50):
                assert max(1.0, base / 2) <= rc.backoff_delay(attempt) <= base
        assert rc.backoff_delay(0) == 1.0 and rc.backoff_delay(10_000) <= 60.0
        assert len({rc.backoff_delay(10) for _ in range(20)}) > 1
        with pytest.raises(ValueError):
            ReconnectingClient("h", client_id="x", backoff_min=0)

    run(body())


# --- against a fake broker built from the codec -------------------------------------------------


class FakeBroker:
    """A scripted MQTT server: answers CONNECT (and optionally the rest), records what clients send."""

    def __init__(self, *, connack: ConnAck = ConnAck(), answer: bool = True, answer_ping: bool = True) -> None:
        self.connack = connack
        self.answer = answer
        self.answer_ping = answer_ping
        self.received: asyncio.Queue[Packet] = asyncio.Queue()
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> FakeBroker:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for w in self.writers:
            w.transport.abort()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    def send(self, *packets: Packet | bytes) -> None:
        self.writers[-1].write(b"".join(p if isinstance(p, bytes) else encode(p) for p in packets))

    async def expect(self, kind: type[P], timeout: float = 3.0) -> P:
        """The next received packet of type ``kind`` (others are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                p = await self.received.get()
                if isinstance(p, kind):
                    return p

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        parser = PacketReader(role="server")
        try:
            while data := await reader.read(65536):
                for p in parser.feed(data):
                    self.received.put_nowait(p)
                    self._react(p, writer)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()

    def _react(self, p: Packet, w: asyncio.StreamWriter) -> None:
        if isinstance(p, Connect):
            w.write(encode(self.connack))
            if self.connack.return_code:
                w.close()
        elif isinstance(p, PingReq):
            if self.answer_ping:
                w.write(encode(PingResp()))
        elif not self.answer:
            return
        elif isinstance(p, Subscribe):
            w.write(encode(SubAck(p.packet_id, tuple(q for _, q in p.topics))))
        elif isinstance(p, Unsubscribe):
            w.write(encode(UnsubAck(p.packet_id)))
        elif isinstance(p, Publish) and p.qos == 1:
            assert p.packet_id is not None
            w.write(encode(PubAck(p.packet_id)))


async def fake_client(broker: FakeBroker, **options: Any) -> MqttClient:
    keepalive = options.pop("keepalive", 60)
    client = MqttClient(**options)
    await client.connect("127.0.0.1", broker.port, client_id="fake", keepalive=keepalive, timeout=2)
    await broker.expect(Connect)
    return client


def test_refused_connect_raises_with_the_return_code() -> None:
    async def body() -> None:
        async with FakeBroker(connack=ConnAck(False, CONNACK_NOT_AUTHORIZED)) as broker:
            client = MqttClient()
            with pytest.raises(MqttConnectError) as info:
                await client.connect("127.0.0.1", broker.port, client_id="x", username="u", password="bad", timeout=2)
            assert info.value.return_code == CONNACK_NOT_AUTHORIZED
            connect = await broker.expect(Connect)
            assert (connect.username, connect.password, connect.client_id) == ("u", b"bad", "x")
            assert client.closed.is_set() and client.close_reason is info.value and not client.is_connected
            with pytest.raises(Exception, match="only once"):
                await client.connect("127.0.0.1", broker.port, client_id="x")

    run(body())


def test_connect_failures_refused_port_and_missing_connack() -> None:
    async def body() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            with pytest.raises(OSError):
                await MqttClient().connect("127.0.0.1", s.getsockname()[1], client_id="x", timeout=2)
        silent: list[asyncio.StreamWriter] = []
        server = await asyncio.start_server(lambda r, w: silent.append(w), "127.0.0.1", 0)  # never answers
        client = MqttClient()
        with pytest.raises(MqttTimeout):
            await client.connect("127.0.0.1", server.sockets[0].getsockname()[1], client_id="x", timeout=0.2)
        assert isinstance(client.close_reason, MqttTimeout) and client.closed.is_set()
        for w in silent:
            w.transport.abort()
        server.close()
        await server.wait_closed()

    run(body())


def test_qos1_publish_waits_for_puback_and_times_out() -> None:
    async def body() -> None:
        async with FakeBroker(answer=False) as broker:
            client = await fake_client(broker)
            task = asyncio.create_task(client.publish("a/b", b"x", qos=1))
            pub = await broker.expect(Publish)
            assert (pub.qos, pub.packet_id, pub.payload) == (1, 1, b"x")
            await asyncio.sleep(0.1)
            assert not task.done()  # still waiting for the PUBACK
            broker.send(PubAck(1))
            await asyncio.wait_for(task, 1)

            with pytest.raises(MqttTimeout):
                await client.publish("a/b", b"lost", qos=1, timeout=0.1)
            assert (await broker.expect(Publish)).packet_id == 2
            # id 2 stays reserved until its (late) PUBACK: the next publish must not reuse it
            task = asyncio.create_task(client.publish("a/b", b"y", qos=1))
            assert (await broker.expect(Publish)).packet_id == 3
            broker.send(PubAck(2))  # the late ack must not complete the publish of id 3
            await asyncio.sleep(0.05)
            assert not task.done()
            broker.send(PubAck(3))
            await asyncio.wait_for(task, 1)
            assert client._inflight == {}
            await client.disconnect()
            await broker.expect(Disconnect)

    run(body())


def test_packet_ids_wrap_and_skip_ids_in_flight() -> None:
    async def body() -> None:
        async with FakeBroker(answer=False) as broker:
            client = await fake_client(broker)
            client._next_id = 65534  # fast-forward the allocator to the end of the id space
            t1 = asyncio.create_task(client.publish("t", b"1", qos=1))
            assert (await broker.expect(Publish)).packet_id == 65534
            sub = asyncio.create_task(client.subscribe([("t/#", 1)]))
            assert (await broker.expect(Subscribe)).packet_id == 65535
            t2 = asyncio.create_task(client.publish("t", b"2", qos=1))
            assert (await broker.expect(Publish)).packet_id == 1  # wrapped; 0 is never used
            broker.send(PubAck(1), SubAck(65535, (1,)))
            await asyncio.wait_for(asyncio.gather(t2, sub), 1)
            assert sub.result() == [1]
            client._next_id = 65534  # 65534 is still in flight and must be skipped; 65535 and 1 are free again
            t3 = asyncio.create_task(client.publish("t", b"3", qos=1))
            t4 = asyncio.create_task(client.unsubscribe(["t/#"]))
            assert (await broker.expect(Publish)).packet_id == 65535
            assert (await broker.expect(Unsubscribe)).packet_id == 1
            broker.send(PubAck(65534), PubAck(65535), UnsubAck(1))
            await asyncio.wait_for(asyncio.gather(t1, t3, t4), 1)
            assert client._inflight == {}

            # with max_inflight=1 a second request waits for the first one's slot
            client2 = await fake_client(broker, max_inflight=1)
            a = asyncio.create_task(client2.publish("t", b"a", qos=1))
            b = asyncio.create_task(client2.publish("t", b"b", qos=1))
            assert (await broker.expect(Publish)).packet_id == 1
            await asyncio.sleep(0.05)
            assert broker.received.empty()
            broker.send(PubAck(1))
            assert (await broker.expect(Publish)).packet_id == 2
            broker.send(PubAck(2))
            await asyncio.wait_for(asyncio.gather(a, b), 1)

    run(body())


def test_pending_requests_fail_when_the_connection_is_lost() -> None:
    async def body() -> None:
        async with FakeBroker(answer=False) as broker:
            client = await fake_client(broker)
            task = asyncio.create_task(client.publish("t", b"x", qos=1))
            await broker.expect(Publish)
            broker.writers[-1].transport.abort()
            with pytest.raises(MqttConnectionLost):
                await asyncio.wait_for(task, 1)
            reason = await client.wait_closed()
            assert isinstance(reason, MqttConnectionLost)

    run(body())


def test_ping_timeout_is_detected() -> None:
    async def body() -> None:
        async with FakeBroker(answer_ping=False) as broker:
            loop = asyncio.get_running_loop()
            client = await fake_client(broker, keepalive=1, ping_timeout=0.3)
            assert client.ping_timeout == 0.3
            start = loop.time()
            await broker.expect(PingReq, timeout=2)
            assert 0.9 <= loop.time() - start < 1.5
            reason = await asyncio.wait_for(client.wait_closed(), 2)
            assert isinstance(reason, MqttConnectionLost) and "PINGRESP" in str(reason)
            assert 1.2 <= loop.time() - start < 2.0

    run(body())


def test_answered_pings_keep_the_connection_alive() -> None:
    async def body() -> None:
        async with FakeBroker() as broker:
            client = await fake_client(broker, keepalive=1)
            assert client.ping_timeout == 5.0  # max(keepalive / 2, 5 s)
            await broker.expect(PingReq, timeout=2)
            await broker.expect(PingReq, timeout=2)  # answered, so pinging goes on
            assert client.is_connected
            await client.disconnect()

    run(body())


def test_incoming_qos1_and_qos2_are_acknowledged_and_delivered_once() -> None:
    async def body() -> None:
        async with FakeBroker() as broker:
            order: list[str] = []

            async def on_message(msg: Publish) -> None:
                order.append(f"cb:{msg.payload.decode()}")

            client = await fake_client(broker, on_message=on_message)
            broker.send(Publish("in/1", b"q1", qos=1, packet_id=7), Publish("in/0", b"q0"))
            assert await broker.expect(PubAck) == PubAck(7)
            broker.send(Publish("in/2", b"q2", qos=2, packet_id=9))
            assert await broker.expect(PubRec) == PubRec(9)
            broker.send(Publish("in/2", b"q2", qos=2, dup=True, packet_id=9))  # redelivery before PUBREL
            assert await broker.expect(PubRec) == PubRec(9)
            broker.send(PubRel(9))
            assert await broker.expect(PubComp) == PubComp(9)
            await asyncio.sleep(0.05)
            assert order == ["cb:q1", "cb:q0", "cb:q2"]
            await client.disconnect()

    run(body())


def test_callback_errors_are_logged_and_delivery_continues(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with FakeBroker() as broker:
            got: list[bytes] = []

            def on_message(msg: Publish) -> None:
                if msg.payload == b"bad":
                    raise RuntimeError("boom")
                got.append(msg.payload)

            client = await fake_client(broker, on_message=on_message)
            broker.send(Publish("t", b"bad"), Publish("t", b"good"))
            async with asyncio.timeout(1):
                while not got:
                    await asyncio.sleep(0.01)
            assert got == [b"good"] and "boom" in caplog.text
            await client.disconnect()

    run(body())


def test_slow_consumer_pauses_reading_instead_of_queueing_without_bound() -> None:
    async def body() -> None:
        async with FakeBroker() as broker:
            release = asyncio.Event()
            got: list[bytes] = []

            async def on_message(msg: Publish) -> None:
                await release.wait()
                got.append(msg.payload)

            client = await fake_client(broker, on_message=on_message, max_queued_messages=10)
            broker.send(*(Publish("t", str(i).encode()) for i in range(50)))
            await asyncio.sleep(0.1)
            assert client._reading_paused and client._messages.qsize() <= 50
            release.set()
            async with asyncio.timeout(2):
                while len(got) < 50:
                    await asyncio.sleep(0.01)
            assert got == [str(i).encode() for i in range(50)] and not client._reading_paused
            await client.disconnect()

    run(body())


def test_protocol_violations_close_the_connection() -> None:
    async def body() -> None:
        async with FakeBroker() as broker:
            client = await fake_client(broker)
            broker.send(b"\xf0\x00")  # reserved packet type 15
            reason = await asyncio.wait_for(client.wait_closed(), 1)
            assert isinstance(reason, MqttConnectionLost) and "protocol error" in str(reason)

            client = await fake_client(broker)
            broker.send(ConnAck())  # a second CONNACK
            reason = await asyncio.wait_for(client.wait_closed(), 1)
            assert "second CONNACK" in str(reason)

    run(body())


def test_disconnect_during_connect_and_before_connect() -> None:
    async def body() -> None:
        async with FakeBroker() as broker:
            client = MqttClient()
            connecting = asyncio.create_task(client.connect("127.0.0.1", broker.port, client_id="x", timeout=2))
            await asyncio.sleep(0)
            await asyncio.wait_for(client.disconnect(), 1)
            with pytest.raises(MqttConnectionLost):
                await asyncio.wait_for(connecting, 1)
            assert client.closed.is_set() and not client.is_connected
            never = MqttClient()
            await never.disconnect()
            assert never.closed.is_set()

    run(body())


def test_publish_validates_arguments_without_touching_the_connection() -> None:
    async def body() -> None:
        async with FakeBroker() as broker:
            client = await fake_client(broker)
            with pytest.raises(ValueError):
                await client.publish("a/+", b"x")
            with pytest.raises(ValueError):
                await client.publish("a", b"x", qos=2)
            with pytest.raises(ValueError):
                await client.publish("a/#", b"x", qos=1)
            with pytest.raises(ValueError):
                await client.subscribe([("a/#/b", 0)])
            assert client._inflight == {} and client.is_connected
            await client.publish("a", b"ok", qos=1)
            assert (await broker.expect(Publish)).packet_id == 1  # the failed attempts burnt no ids
            await client.disconnect()

    run(body())

