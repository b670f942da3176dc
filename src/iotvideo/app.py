"""Composition root: builds the services and the ASGI application of one server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from iotvideo.config import Settings
from iotvideo.console import Console
from iotvideo.devicelink.node import DeviceEndpoint
from iotvideo.domain.live import LiveAuthorizer, LiveSessions, media_token_signer
from iotvideo.http_protocol import Handler
from iotvideo.media.hub import HubConfig
from iotvideo.media.node import MediaEndpoint
from iotvideo.openapi.gateway import Gateway, GatewayASGI
from iotvideo.services import Services


class Server:
    """The ASGI app: ``/`` is the cloud API gateway, the rest is Starlette routes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services: Services | None = None
        self.devices: DeviceEndpoint | None = None
        self.gateway: GatewayASGI | None = None
        # A publish needs a push token the cloud issued for that stream: the newest one replaces an old push.
        self.media = MediaEndpoint(settings, hub=HubConfig(replace_publisher=True))
        self.console = Console(lambda: self.services)  # the web console, /console/
        self.web = Starlette(routes=[Route("/healthz", self.healthz),
                                     Route("/mqtt/auth", self.mqtt_hook, methods=["POST"]),
                                     Route("/mqtt/acl", self.mqtt_hook, methods=["POST"]),
                                     *self.media.routes,
                                     *self.console.routes],
                             lifespan=self._lifespan)

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        self.services = await Services.open(self.settings)
        self.devices = DeviceEndpoint(self.settings, self.services.link, self.services.device_state)
        await self.devices.start()
        signer = media_token_signer(self.settings)
        live = LiveSessions(self.settings, self.services.link, self.media.registry, signer, ports=self.media.ports)
        self.media.authorizer = LiveAuthorizer(signer, live)
        self.services.live = live
        await self.media.start()
        self.gateway = GatewayASGI(Gateway(self.services))
        try:
            yield
        finally:
            self.gateway = None
            await live.close()
            await self.media.stop()
            await self.devices.stop()
            await self.services.close()

    async def healthz(self, _request: Request) -> JSONResponse:
        ready = self.gateway is not None
        return JSONResponse({"status": "ok" if ready else "starting"}, status_code=200 if ready else 503)

    async def mqtt_hook(self, request: Request) -> JSONResponse:
        """EMQX HTTP authentication / authorisation hooks (external broker mode only)."""
        external = self.devices.external if self.devices is not None else None
        if external is None:
            return JSONResponse({"error": "not in external broker mode"}, status_code=404)
        try:
            body: Any = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return JSONResponse({"result": "deny"}, status_code=400)
        hook = external.http_auth if request.url.path == "/mqtt/auth" else external.http_acl
        return JSONResponse(await hook(body))

    def route(self, path: str) -> Handler | None:
        """The direct route of the HTTP protocol (iotvideo/http_protocol.py): the gateway's
        ``/`` once it is up; everything else goes through ASGI (``__call__``)."""
        if path == "/" and self.gateway is not None:
            return self.gateway.direct
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/" and self.gateway is not None:
            await self.gateway(scope, receive, send)
        else:
            await self.web(scope, receive, send)


def create_app(settings: Settings | None = None) -> Server:
    return Server(settings or Settings())
