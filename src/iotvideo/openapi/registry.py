"""The table of API actions: each handler registers itself under its Action name."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from iotvideo.openapi.params import Params
from iotvideo.services import Services


@dataclass(frozen=True)
class Call:
    """One authenticated API call as a handler sees it."""

    action: str
    params: Params
    tenant_id: str
    access_key_id: str
    services: Services


Handler = Callable[[Call], Awaitable[dict[str, Any] | None]]
ACTIONS: dict[str, Handler] = {}
PRODUCT_OF: dict[str, str] = {}
# Actions whose SDK models type ``Code`` as an integer (the seed: "Code is int here").
INT_CODE_ACTIONS = frozenset({"QueryDeviceRecordLifeCycle", "QueryDeviceEventPicture", "QueryDeviceEventRecord"})


def action(name: str, product: str = "Linkvisual") -> Callable[[Handler], Handler]:
    """Registers a handler; it returns the fields to add beside RequestId/Success."""

    def register(fn: Handler) -> Handler:
        if name in ACTIONS:
            raise RuntimeError(f"action {name} registered twice")
        ACTIONS[name] = fn
        PRODUCT_OF[name] = product
        return fn

    return register
