"""The device link: who may connect, what devices say, and calls from the cloud to them.

It sits between a message transport (the embedded ``Broker``, or an external broker
reached as a client, see ``external.py``) and the domain:

* authenticates devices with their secret (``auth.py``) and applies the topic ACL;
* tracks online state (``DeviceState``) and announces it on the bus;
* acknowledges property and event posts after validating them against the thing model,
  keeps the latest properties and hands events to the domain as typed bus events;
* makes service calls — async (``thing/service/{id}`` + ``_reply``) or synchronous
  (RRPC) — with a timeout, failing at once for devices that are not online.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from iotvideo.bus import Bus, DeviceDeleted, DeviceDisabled, DeviceOffline, DeviceOnline, EventPosted, PropertiesPosted
from iotvideo.devicelink import alink, tsl
from iotvideo.devicelink.auth import DeviceAuthError, check_password, identity_from_connect
from iotvideo.devicelink.broker import ConnectRefused, Identity, Session
from iotvideo.devicelink.mqtt import CONNACK_BAD_USERNAME_OR_PASSWORD, CONNACK_NOT_AUTHORIZED, Connect, Publish
from iotvideo.devicelink.topics_acl import device_may_publish, device_may_subscribe
from iotvideo.domain.clock import now_ms
from iotvideo.domain.device_state import DeviceState
from iotvideo.errors import BusinessError, device_disabled, device_initial, device_offline

log = logging.getLogger("iotvideo.devicelink")


class Transport(Protocol):
    """How the link reaches a device: the embedded broker or an external one."""

    def deliver(self, key: str, topic: str, payload: bytes, qos: int = 0) -> bool: ...
    def is_connected(self, key: str) -> bool: ...
    def kick(self, key: str, reason: str) -> bool: ...


@dataclass(frozen=True)
class Target:
    """The device a call goes to."""

    iot_id: str
    product_key: str
    device_name: str


@dataclass(frozen=True)
class CallResult:
    message_id: str
    code: int | None = None  # None: not waited for
    data: Any = None
    message: str | None = None


def call_timeout_error(identifier: str) -> BusinessError:
    return BusinessError("466", f"device did not answer {identifier} in time.")


class DeviceLink:
    def __init__(self, state: DeviceState, bus: Bus, rpc_timeout_s: float = 5.0) -> None:
        self.state = state
        self.bus = bus
        self.rpc_timeout_s = rpc_timeout_s
        self.transport: Transport | None = None
        self._ids = itertools.count(int(time.time() * 1000) % 10**9 * 1000)
        self._pending: dict[str, tuple[str, asyncio.Future[alink.ReplyMsg]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        bus.subscribe(DeviceDisabled, self._on_disabled)
        bus.subscribe(DeviceDeleted, self._on_deleted)

    # --- hooks for the broker --------------------------------------------------------
    async def authenticate(self, connect: Connect, peer: str) -> Identity:
        try:
            ident = identity_from_connect(connect.client_id, connect.username)
        except DeviceAuthError as e:
            raise ConnectRefused(e.connack_code, e.reason) from None
        cred = await self.state.credentials(ident.product_key, ident.device_name)
        if cred is None:
            raise ConnectRefused(CONNACK_NOT_AUTHORIZED, "unknown device")
        if not check_password(cred.secret, ident, connect.password):
            raise ConnectRefused(CONNACK_BAD_USERNAME_OR_PASSWORD, "bad password")
        if not cred.enabled:
            raise ConnectRefused(CONNACK_NOT_AUTHORIZED, "device disabled")
        return Identity(cred.iot_id, cred.product_key, cred.device_name, cred.tenant_id)

    def may_publish(self, ident: Identity, topic: str) -> bool:
        return device_may_publish(ident.product_key, ident.device_name, topic)

    def may_subscribe(self, ident: Identity, topic_filter: str) -> bool:
        return device_may_subscribe(ident.product_key, ident.device_name, topic_filter)

    def on_connected(self, session: Session) -> None:
        assert session.identity is not None
        self.device_connected(session.identity, session.peer)

    def on_disconnected(self, session: Session, reason: str, replaced: bool) -> None:
        if session.identity is not None and not replaced:
            self.device_disconnected(session.identity, reason)

    def on_publish(self, session: Session, publish: Publish) -> None:
        assert session.identity is not None
        self.uplink(session.identity, publish.topic, publish.payload)

    # --- transport-independent handling ----------------------------------------------
    def device_connected(self, ident: Identity, ip: str) -> None:
        log.info("device online iot_id=%s ip=%s", ident.key, ip)
        self.state.mark_online(ident.key, ip)
        self.bus.publish(DeviceOnline(ident.key, ip))

    def device_disconnected(self, ident: Identity, reason: str) -> None:
        log.info("device offline iot_id=%s reason=%s", ident.key, reason)
        self.state.mark_offline(ident.key)
        self.bus.publish(DeviceOffline(ident.key, reason))
        for mid, (iot_id, fut) in list(self._pending.items()):
            if iot_id == ident.key and not fut.done():
                fut.set_exception(device_offline())

    def uplink(self, ident: Identity, topic: str, payload: bytes) -> None:
        """One message a device published (already ACL-checked)."""
        pk, dn = ident.product_key, ident.device_name
        kind = alink.classify(pk, dn, topic)
        if isinstance(kind, alink.Other):
            return
        try:
            msg = alink.parse_uplink(kind, payload)
        except alink.AlinkError as e:
            log.info("bad uplink iot_id=%s topic=%s: %s", ident.key, topic[:120], e.message)
            if isinstance(kind, (alink.PropertyPost, alink.EventPost)):
                self._reply(ident, topic, e.msg_id or "0", e.code, None, e.message)
            return
        if isinstance(msg, alink.ReplyMsg):
            self._resolve(ident, msg)
        elif isinstance(msg, alink.PropertyPostMsg):
            self._on_properties(ident, topic, msg)
        elif isinstance(msg, alink.EventPostMsg):
            self._on_event(ident, topic, msg)
        elif isinstance(msg, alink.OtaInformMsg):
            if msg.version:
                self._spawn(self.state.set_firmware(ident.key, msg.version))

    def _reply(self, ident: Identity, topic: str, msg_id: str, code: int, data: Any, message: str | None) -> None:
        if self.transport is None:
            return
        rtopic, payload = alink.reply(topic, msg_id, code, data, message)
        self.transport.deliver(ident.key, rtopic, payload)

    def _on_properties(self, ident: Identity, topic: str, msg: alink.PropertyPostMsg) -> None:
        errors = tsl.validate_properties(msg.params)
        if errors:
            self._reply(ident, topic, msg.id, errors[0].code, None, "; ".join(str(e) for e in errors[:5]))
            return
        self._reply(ident, topic, msg.id, alink.CODE_OK, {}, "success")
        t = now_ms()
        self._spawn(self.state.save_properties(ident.key, msg.params, t))
        self.bus.publish(PropertiesPosted(ident.key, msg.params, t))

    def _on_event(self, ident: Identity, topic: str, msg: alink.EventPostMsg) -> None:
        errors = tsl.validate_event(msg.identifier, msg.value)
        if errors:
            self._reply(ident, topic, msg.id, errors[0].code, None, "; ".join(str(e) for e in errors[:5]))
            return
        self._reply(ident, topic, msg.id, alink.CODE_OK, {}, "success")
        self.bus.publish(EventPosted(ident.key, msg.identifier, msg.value, msg.time or now_ms(), msg.id))

    def _resolve(self, ident: Identity, msg: alink.ReplyMsg) -> None:
        # Only the device a call went to may answer it: message ids are predictable, and any
        # device may publish replies with any id on its own topics.
        key = f"rrpc:{msg.rrpc_id}" if msg.rrpc_id else f"id:{msg.id}"
        entry = self._pending.get(key)
        if entry is None or entry[0] != ident.key:
            # Replies to async calls nobody waits for end here: keep the device's verdict.
            log.info("device reply iot_id=%s id=%s service=%s code=%s message=%r", ident.key, msg.id,
                     msg.identifier or "-", msg.code, (msg.message or "")[:200])
            return
        del self._pending[key]
        if not entry[1].done():
            entry[1].set_result(msg)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("device link task failed: %r", task.exception())

    def _on_disabled(self, ev: DeviceDisabled) -> None:
        self.state.forget()
        if self.transport is not None:
            self.transport.kick(ev.iot_id, "device disabled")

    def _on_deleted(self, ev: DeviceDeleted) -> None:
        self.state.forget()
        if self.transport is not None:
            self.transport.kick(ev.iot_id, "device deleted")

    # --- cloud → device ---------------------------------------------------------------
    async def _require_online(self, target: Target) -> None:
        if self.transport is not None and self.transport.is_connected(target.iot_id):
            return
        status = await self.state.status(target.iot_id)
        if status == "UNACTIVE":
            raise device_initial()
        if status == "DISABLE":
            raise device_disabled()
        raise device_offline()

    def next_id(self) -> str:
        return str(next(self._ids))

    async def call(self, target: Target, identifier: str, args: dict[str, Any], *, wait: bool = True,
                   timeout: float | None = None) -> CallResult:
        """Calls a service of the thing model on one device.

        Synchronous services go as RRPC; the others as async service calls. ``wait``
        waits for the reply (always for RRPC); a device that is not online fails at once
        with the seed's 466 errors, a device that does not answer in time with
        ``call_timeout_error``."""
        errors = tsl.validate_service_input(identifier, args)
        if errors:
            raise BusinessError("460", "; ".join(str(e) for e in errors[:5]))
        await self._require_online(target)
        assert self.transport is not None
        msg_id = self.next_id()
        sync = tsl.call_type(identifier) == "sync"
        if sync:
            topic, payload = alink.rrpc_call(target.product_key, target.device_name, msg_id, identifier, args, msg_id)
            key = f"rrpc:{msg_id}"
            wait = True
        else:
            topic, payload = alink.service_call(target.product_key, target.device_name, msg_id, identifier, args)
            key = f"id:{msg_id}"
        return await self._send(target, key, msg_id, topic, payload, wait, timeout, identifier)

    async def set_properties(self, target: Target, items: dict[str, Any], *, wait: bool = False,
                             timeout: float | None = None) -> CallResult:
        errors = tsl.validate_properties(items, writable_only=True)
        if errors:
            raise BusinessError("460", "; ".join(str(e) for e in errors[:5]))
        await self._require_online(target)
        msg_id = self.next_id()
        topic, payload = alink.property_set(target.product_key, target.device_name, msg_id, items)
        return await self._send(target, f"id:{msg_id}", msg_id, topic, payload, wait, timeout, "property.set")

    async def _send(self, target: Target, key: str, msg_id: str, topic: str, payload: bytes, wait: bool,
                    timeout: float | None, what: str) -> CallResult:
        assert self.transport is not None
        fut: asyncio.Future[alink.ReplyMsg] | None = None
        if wait:
            fut = asyncio.get_running_loop().create_future()
            self._pending[key] = (target.iot_id, fut)
        if not self.transport.deliver(target.iot_id, topic, payload):
            self._pending.pop(key, None)
            raise device_offline()
        if fut is None:
            return CallResult(msg_id)
        try:
            reply = await asyncio.wait_for(fut, timeout or self.rpc_timeout_s)
        except asyncio.TimeoutError:
            raise call_timeout_error(what) from None
        finally:
            self._pending.pop(key, None)
        return CallResult(msg_id, reply.code, reply.data, reply.message)

    async def close(self) -> None:
        for _, fut in self._pending.values():
            if not fut.done():
                fut.set_exception(device_offline())
        self._pending.clear()
        for t in list(self._tasks):
            await asyncio.gather(t, return_exceptions=True)


def dumps_result(data: Any) -> str:
    """``Result`` of InvokeThingService: the device's reply data as JSON text."""
    return json.dumps(data if data is not None else {}, ensure_ascii=False, separators=(",", ":"))
