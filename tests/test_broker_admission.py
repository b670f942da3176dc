"""The embedded broker sheds CONNECTs beyond ``max_pending_auth`` with CONNACK 3 (server unavailable)."""

from __future__ import annotations

import asyncio

from test_devicelink_broker import Raw

from iotvideo.devicelink.broker import Broker, BrokerLimits, ConnectRefused, Identity, Session
from iotvideo.devicelink.mqtt import CONNACK_ACCEPTED, CONNACK_SERVER_UNAVAILABLE, Connect, Publish


class GatedHooks:
    """Authentication waits for ``gate``; a client id starting with "bad" is refused, "boom" raises."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = 0

    async def authenticate(self, connect: Connect, peer: str) -> Identity:
        self.started += 1
        await self.gate.wait()
        if connect.client_id.startswith("bad"):
            raise ConnectRefused(4, "bad credentials")
        if connect.client_id.startswith("boom"):
            raise RuntimeError("store down")
        return Identity(connect.client_id, "pk", connect.client_id, "iot-" + connect.client_id)

    def may_publish(self, ident: Identity, topic: str) -> bool:
        return True

    def may_subscribe(self, ident: Identity, topic_filter: str) -> bool:
        return True

    def on_connected(self, session: Session) -> None:
        pass

    def on_disconnected(self, session: Session, reason: str, replaced: bool) -> None:
        pass

    def on_publish(self, session: Session, publish: Publish) -> None:
        pass


async def _connack(port: int, client_id: str) -> tuple[Raw, asyncio.Task[int]]:
    raw = await Raw.open(port)
    return raw, asyncio.ensure_future(raw.connect(client_id=client_id))


def test_connects_beyond_the_pending_limit_get_server_unavailable() -> None:
    async def go() -> None:
        hooks = GatedHooks()
        broker = Broker(hooks, BrokerLimits(max_pending_auth=3))  # type: ignore[arg-type]
        port = await broker.listen("127.0.0.1", 0)
        try:
            waiting = [await _connack(port, cid) for cid in ("dev1", "bad1", "boom1")]
            while hooks.started < 3:
                await asyncio.sleep(0.01)
            assert broker.pending_auth == 3
            extra, extra_ack = await _connack(port, "dev2")
            assert await asyncio.wait_for(extra_ack, 5) == CONNACK_SERVER_UNAVAILABLE
            await asyncio.wait_for(extra.eof.wait(), 5)  # and the connection is closed
            assert broker.stats.shed == 1 and hooks.started == 3  # the shed CONNECT never reached the hooks
            hooks.gate.set()
            codes = [await asyncio.wait_for(ack, 5) for _, ack in waiting]
            assert codes == [CONNACK_ACCEPTED, 4, CONNACK_SERVER_UNAVAILABLE]
            assert broker.pending_auth == 0  # refused and failed authentications give their place back
            again, again_ack = await _connack(port, "dev2")
            assert await asyncio.wait_for(again_ack, 5) == CONNACK_ACCEPTED
            assert broker.is_connected("dev1") and broker.is_connected("dev2")
            for raw, _ in (*waiting, (extra, None), (again, None)):
                raw.writer.close()
        finally:
            await broker.close()

    asyncio.run(asyncio.wait_for(go(), 20))


def test_close_ends_connections_still_authenticating() -> None:
    """Shutting down while a CONNECT is being authenticated closes that connection too
    (it is not yet a device's session) and returns; the gate opening later changes nothing."""

    async def go() -> None:
        hooks = GatedHooks()
        broker = Broker(hooks, BrokerLimits())  # type: ignore[arg-type]
        port = await broker.listen("127.0.0.1", 0)
        hooks.gate.set()
        ready, ready_ack = await _connack(port, "dev1")
        assert await asyncio.wait_for(ready_ack, 5) == CONNACK_ACCEPTED
        hooks.gate.clear()
        waiting, ack = await _connack(port, "dev2")
        while hooks.started < 2:
            await asyncio.sleep(0.01)
        assert broker.pending_auth == 1
        await asyncio.wait_for(broker.close(), 10)
        await asyncio.wait_for(waiting.eof.wait(), 5)
        await asyncio.wait_for(ready.eof.wait(), 5)
        assert not broker.open_sessions and not broker.sessions
        hooks.gate.set()
        await asyncio.sleep(0.05)
        assert not broker.is_connected("dev2")
        ack.cancel()

    asyncio.run(asyncio.wait_for(go(), 20))
