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
    timings: str
    """POST (the same JSON as `tts`): when each word is said, without the audio."""
    voices: str
    health: str
    ws_tts: str
    """The WebSocket: speak, streamed text, barge-in."""
    metrics: str
    """Prometheus' text format."""
    prerender: str
    """POST: phrases rendered into the phrase cache in the background."""


API_ROUTES: Final = ApiRoutes(page="/", tts="/api/tts", timings="/api/timings", voices="/api/voices",
                              health="/healthz", ws_tts="/ws/tts", metrics="/metrics",
                              prerender="/api/cache/prerender")
