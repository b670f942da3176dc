"""Live streaming actions: QueryLiveStreaming and StopLiveStreaming (docs/media.md).

``QueryLiveStreaming`` answers a play URL at once and tells the device to push in the
background (``iotvideo.domain.live``); an offline device gets the seed's 466 error.
"""

from __future__ import annotations

from typing import Any

from iotvideo.devicelink.link import Target
from iotvideo.domain.live import MAX_URL_VALID_S, MIN_URL_VALID_S, SCHEMES, LiveSessions
from iotvideo.errors import BusinessError, invalid_parameter
from iotvideo.openapi.registry import Call, action
from iotvideo.openapi.shapes import device_ref, stream_type


def _live(call: Call) -> LiveSessions:
    live = call.services.live
    if live is None:
        raise BusinessError("500", "live streaming is not available on this node.")
    return live


async def _target(call: Call) -> Target:
    return Target(*await call.services.registry.address(call.tenant_id, device_ref(call.params)))


@action("QueryLiveStreaming")
async def query_live_streaming(call: Call) -> dict[str, Any]:
    p = call.params
    st = stream_type(p)
    scheme = (p.str("Scheme", max_len=16) or "rtmp").lower()
    if scheme not in SCHEMES:
        raise invalid_parameter("Scheme", "must be rtmp, hls or flv")
    encrypt = bool(p.bool("ShouldEncrypt", default=False))
    p.int("EncryptType", default=0, min=0, max=0)  # 0: key-frame encryption, the only one
    valid = p.int("UrlValidDuration", default=MIN_URL_VALID_S, min=MIN_URL_VALID_S, max=MAX_URL_VALID_S)
    unlimited = bool(p.bool("PlayUnLimited", default=False))
    cache_ms = p.int("CacheDuration", default=0, min=0, max=10000)
    force = bool(p.bool("ForceIFrame", default=False))
    p.bool("EnableStun", default=False)  # accepted; there is no P2P relay, StunInfo is empty
    assert valid is not None and cache_ms is not None
    live = _live(call)
    target = await _target(call)
    started = await live.start(call.tenant_id, target, st, scheme, valid, unlimited, encrypt, force, cache_ms)
    # both key fields: the seed names DecryptKey, the newer SDK models only RelayDecryptKey
    return {"Data": {"Path": started.path, "DecryptKey": started.decrypt_key,
                     "RelayDecryptKey": started.decrypt_key, "StunInfo": ""}}


@action("StopLiveStreaming")
async def stop_live_streaming(call: Call) -> dict[str, Any] | None:
    st = stream_type(call.params)
    live = _live(call)
    await live.stop(call.tenant_id, await _target(call), st)
    return None
