"""Starts the device side of a server: the embedded broker (plain and TLS) or the
connection to an external broker, wired to the device link."""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING

from iotvideo.config import Settings
from iotvideo.devicelink.broker import Broker, BrokerLimits
from iotvideo.devicelink.link import DeviceLink
from iotvideo.domain.device_state import DeviceState

if TYPE_CHECKING:
    from iotvideo.devicelink.external import ExternalBroker

log = logging.getLogger("iotvideo.devicelink")


class DeviceEndpoint:
    """What ``iotvideo serve`` runs for devices; ``ports`` says where it listens."""

    def __init__(self, settings: Settings, link: DeviceLink, state: DeviceState) -> None:
        self.settings = settings
        self.link = link
        self.state = state
        self.broker: Broker | None = None
        self.external: ExternalBroker | None = None
        self.ports: dict[str, int] = {}

    async def start(self) -> None:
        s = self.settings
        self.state.start()
        if s.mqtt_mode == "external":
            from iotvideo.devicelink.external import ExternalBroker

            self.external = ExternalBroker(s, self.link)
            self.link.transport = self.external
            await self.external.start()
            return
        if s.mqtt_mode != "embedded":
            raise ValueError(f"unknown mqtt_mode {s.mqtt_mode!r}: use embedded or external")
        reset = await self.state.reset_online()
        if reset:
            log.info("%d devices left ONLINE by a previous run marked OFFLINE", reset)
        self.broker = Broker(self.link, BrokerLimits(max_pending_auth=s.mqtt_max_pending_auth))
        self.link.transport = self.broker
        host = s.mqtt_host or s.host
        self.ports["mqtt"] = await self.broker.listen(host, s.mqtt_port)
        if s.tls_cert and s.tls_key:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(s.tls_cert), str(s.tls_key))
            self.ports["mqtts"] = await self.broker.listen(host, s.mqtt_tls_port, ctx)
        log.info("device MQTT listening on %s %s", host, self.ports)

    async def stop(self) -> None:
        if self.broker is not None:
            await self.broker.close()
        if self.external is not None:
            await self.external.stop()
        self.link.transport = None
