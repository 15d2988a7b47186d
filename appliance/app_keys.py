"""Typed keys for what the aiohttp application holds: configuration, the speech engine, the status board."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .config import ApplianceConfig
from .status import StatusBoard

if TYPE_CHECKING:
    from .synthesis.engine import SpeechEngine

CONFIG = web.AppKey("config", ApplianceConfig)
STATUS = web.AppKey("status", StatusBoard)
ENGINE: web.AppKey[SpeechEngine] = web.AppKey("engine")
