"""iotvideo: a self-hostable video cloud for IoT cameras, LinkVisual-API compatible."""

__version__ = "0.1.0"
