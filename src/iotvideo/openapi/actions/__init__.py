"""API action handlers, one module per group; importing this registers them all."""

from iotvideo.openapi.actions import iot, lifecycle, live, plans, templates, things

ACTIONS_LOADED = (iot, lifecycle, live, plans, templates, things)
