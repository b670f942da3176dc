"""API action handlers, one module per group; importing this registers them all."""

from iotvideo.openapi.actions import iot, lifecycle, plans, templates

ACTIONS_LOADED = (iot, lifecycle, plans, templates)
