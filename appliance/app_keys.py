"""Typed keys for what the aiohttp application holds: configuration and the speech engine (which owns the
daemon's health board)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .config import ApplianceConfig

if TYPE_CHECKING:
    from .synthesis.engine import SpeechEngine
    from .synthesis.prerender import Prerenderer

CONFIG = web.AppKey("config", ApplianceConfig)
ENGINE: web.AppKey[SpeechEngine] = web.AppKey("engine")
PRERENDER: web.AppKey[Prerenderer] = web.AppKey("prerender")
"""The phrases waiting to be rendered into the phrase cache (set while the daemon runs with the cache on)."""
WYOMING_PORT = web.AppKey("wyoming_port", int)
"""The port the Wyoming listener bound (set while it runs), for the mDNS announcement."""
