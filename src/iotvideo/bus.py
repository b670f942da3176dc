"""In-process event bus: services announce what happened; others react (typed events)."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

log = logging.getLogger("iotvideo.bus")

E = TypeVar("E")
Handler = Callable[[Any], Awaitable[None] | None]


@dataclass(frozen=True)
class DeviceOnline:
    iot_id: str
    ip_address: str


@dataclass(frozen=True)
class DeviceOffline:
    iot_id: str
    reason: str


@dataclass(frozen=True)
class DeviceDisabled:
    iot_id: str


@dataclass(frozen=True)
class DeviceDeleted:
    iot_id: str


@dataclass(frozen=True)
class PropertiesPosted:
    iot_id: str
    params: dict[str, Any]
    time_ms: int


@dataclass(frozen=True)
class EventPosted:
    iot_id: str
    identifier: str
    value: dict[str, Any]
    time_ms: int
    message_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Bus:
    """Handlers run in subscription order; async ones are awaited as tasks so a slow
    handler never blocks the publisher. A failing handler is logged, never propagated."""

    def __init__(self) -> None:
        self._handlers: dict[type, list[Handler]] = defaultdict(list)
        self._tasks: set[asyncio.Task[None]] = set()

    def subscribe(self, kind: type[E], handler: Callable[[E], Awaitable[None] | None]) -> None:
        self._handlers[kind].append(handler)  # type: ignore[arg-type]

    def publish(self, event: object) -> None:
        for h in self._handlers.get(type(event), ()):
            try:
                res = h(event)
            except Exception:
                log.exception("bus handler failed for %s", type(event).__name__)
                continue
            if res is not None:
                task = asyncio.ensure_future(res)
                self._tasks.add(task)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("bus handler failed: %r", task.exception())

    async def drain(self) -> None:
        """Waits for the async handlers running now (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
