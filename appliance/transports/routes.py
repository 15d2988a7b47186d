"""Where each transport is mounted: one table for the router and for the mDNS TXT record that advertises it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class ApiRoutes:
    page: str
    """The web page."""
    tts: str
    """POST (JSON) and GET (query string): streamed audio."""
    voices: str
    health: str
    ws_tts: str
    """The WebSocket: speak, streamed text, barge-in."""
    prerender: str = "/api/cache/prerender"
    """POST: phrases rendered into the phrase cache in the background."""


API_ROUTES: Final = ApiRoutes(page="/", tts="/api/tts", voices="/api/voices", health="/healthz", ws_tts="/ws/tts")
