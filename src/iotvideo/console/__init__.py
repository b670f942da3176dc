"""The web console: sign in, see the tenant's devices, watch one live (``/console/``)."""

from iotvideo.console.web import Console

__all__ = ["Console"]
