"""The TXT record: where the API lives, the version, and which voices run on which backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from ..health import VoiceHealth
from ..transports.routes import ApiRoutes

MAX_TXT_STRING_BYTES: Final = 255
"""Each TXT string ("key=value") is one length-prefixed string of at most 255 bytes (RFC 6763 §6.1)."""


@dataclass(frozen=True)
class TxtFacts:
    """The parts of the TXT record that stay fixed while the daemon runs."""

    version: str
    routes: ApiRoutes
    """The table the daemon's router is built from."""
    default_voice: str = ""
    """Listed first, so it survives truncation of the voice list."""
    token_required: bool = False


def txt_properties(facts: TxtFacts, voices: Sequence[VoiceHealth]) -> dict[str, str]:
    """TXT key/values for the engine's voices.

    Keys stay within the 9 characters RFC 6763 §6.4 recommends. `voices` lists as many whole names as fit
    one TXT string and `nvoices` gives the full count, so a client can tell the list was cut and ask
    `voicesapi` for all of them."""
    names = sorted((voice.name for voice in voices), key=lambda name: (name != facts.default_voice, name))
    backends = sorted({voice.backend for voice in voices}, key=lambda backend: (backend != "npu", backend))
    routes = facts.routes
    return {
        "txtvers": "1",
        "path": routes.page,
        "api": routes.tts,
        "ws": routes.ws_tts,
        "voicesapi": routes.voices,
        "health": routes.health,
        "version": facts.version,
        "auth": "bearer" if facts.token_required else "none",
        "backend": ",".join(backends),
        "nvoices": str(len(names)),
        "voices": _joined_within(names, MAX_TXT_STRING_BYTES - len(b"voices=")),
    }


def _joined_within(names: list[str], max_bytes: int) -> str:
    """Comma-join whole names, stopping before the first one that would overflow `max_bytes`."""
    joined = b""
    for name in names:
        candidate = joined + b"," + name.encode() if joined else name.encode()
        if len(candidate) > max_bytes:
            break
        joined = candidate
    return joined.decode()
