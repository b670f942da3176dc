"""Starts the media side of a server: the stream hubs, the RTMP server and the HTTP player routes.

Until the live-session layer provides an authorizer, every publish and play is refused.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.routing import BaseRoute

from iotvideo.config import Settings

from . import accel
from .auth import MediaAuthorizer, StaticAuthorizer
from .hls import HlsConfig
from .http_play import PlayRoutes
from .hub import HubConfig, HubRegistry
from .rtmp_server import RtmpLimits, RtmpServer

__all__ = ["MediaEndpoint"]

log = logging.getLogger("iotvideo.media")


class MediaEndpoint:
    """What ``iotvideo serve`` runs for live media; ``ports`` says where it listens.

    ``authorizer`` may be replaced before ``start`` (the live-session layer does). Hubs with
    no publisher are removed once idle for ``settings.media_idle_s``; the registry's
    ``on_idle`` and ``on_publisher_gone`` are free for the owner to chain onto.
    """

    def __init__(
        self,
        settings: Settings,
        authorizer: MediaAuthorizer | None = None,
        *,
        hub: HubConfig | None = None,
        hls: HlsConfig | None = None,
        rtmp: RtmpLimits | None = None,
    ) -> None:
        self.settings = settings
        self.authorizer: MediaAuthorizer = authorizer or StaticAuthorizer({})
        self.registry = HubRegistry(hub, idle_after_s=settings.media_idle_s, hls=hls)
        self.rtmp = RtmpServer(self.registry, self.authorizer, rtmp)
        self.play = PlayRoutes(self.registry, self.authorizer)
        self.ports: dict[str, int] = {}
        self._idle_task: asyncio.Task[None] | None = None

    @property
    def routes(self) -> list[BaseRoute]:
        """The HTTP player routes (``/live/…``, ``/hls/…``), to mount into the web app."""
        return list(self.play.routes)

    async def start(self) -> None:
        s = self.settings
        self.rtmp.authorizer = self.play.authorizer = self.authorizer
        host = s.rtmp_host or s.host
        self.ports["rtmp"] = await self.rtmp.start(host, s.rtmp_port)
        self._idle_task = asyncio.get_running_loop().create_task(self._reap_idle())
        log.info("media RTMP listening on %s:%d (%s)", host, self.ports["rtmp"], accel.describe())

    async def stop(self) -> None:
        if self._idle_task is not None:
            self._idle_task.cancel()
        await self.rtmp.close()
        self.registry.close()

    async def _reap_idle(self, interval_s: float = 1.0) -> None:
        """Run the registry's idle check (its ``on_idle``), then forget idle hubs nobody publishes to."""
        registry = self.registry
        while True:
            await asyncio.sleep(interval_s)
            registry.check_idle()
            for hub in list(registry):
                limit = registry.idle_after_s if hub.idle_after_s is None else hub.idle_after_s
                if not hub.publishing and hub.idle_for() >= limit and registry.get(hub.key) is hub:
                    log.debug("media: removing idle stream %s", hub.path)
                    registry.remove(hub.key)
