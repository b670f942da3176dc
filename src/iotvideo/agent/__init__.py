"""The device agent: a camera that connects to iotvideo with the device protocol (``iotvideo camera``)."""

from iotvideo.agent.device import (
    MEDIA_SERVICES,
    CameraAgent,
    MediaBackend,
    NotSupported,
    ServiceAnswer,
    ServiceError,
    UnsupportedMedia,
    redact_source,
)

__all__ = [
    "MEDIA_SERVICES",
    "CameraAgent",
    "MediaBackend",
    "NotSupported",
    "ServiceAnswer",
    "ServiceError",
    "UnsupportedMedia",
    "redact_source",
]
