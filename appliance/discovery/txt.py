"""The TXT record: where the API lives, the version, and which voices run on which backend."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..transports.routes import ApiRoutes

MAX_TXT_STRING_BYTES: Final = 255
"""Each TXT string ("key=value") is one length-prefixed string of at most 255 bytes (RFC 6763 §6.1)."""
BACKEND_ORDER: Final = ("npu", "cpu")


@dataclass(frozen=True)
class TxtFacts:
    """The parts of the TXT record that stay fixed while the daemon runs."""

    version: str
    routes: ApiRoutes
    """The table the daemon's router is built from."""
    default_voice: str = ""
    """Listed first, so it survives truncation of the voice list."""
    token_required: bool = False


def txt_properties(facts: TxtFacts, voices: Mapping[str, Any]) -> dict[str, str]:
    """TXT key/values for the StatusBoard's 'voices' part ({name: {'backend': 'npu'|'cpu', ...}}).

    Keys stay within the 9 characters RFC 6763 §6.4 recommends. `voices` lists as many whole names as fit
    one TXT string and `nvoices` gives the full count, so a client can tell the list was cut and ask
    `voicesapi` for all of them."""
    names = sorted(voices, key=lambda name: (name != facts.default_voice, name))
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
        "backend": ",".join(_backends(voices)),
        "nvoices": str(len(names)),
        "voices": _joined_within(names, MAX_TXT_STRING_BYTES - len(b"voices=")),
    }


def _backends(voices: Mapping[str, Any]) -> list[str]:
    found = {str(v.get("backend")) for v in voices.values() if isinstance(v, Mapping) and v.get("backend")}
    return sorted(found, key=lambda b: (BACKEND_ORDER.index(b) if b in BACKEND_ORDER else len(BACKEND_ORDER), b))


def _joined_within(names: list[str], max_bytes: int) -> str:
    """Comma-join whole names, stopping before the first one that would overflow `max_bytes`."""
    joined = b""
    for name in names:
        candidate = joined + b"," + name.encode() if joined else name.encode()
        if len(candidate) > max_bytes:
            break
        joined = candidate
    return joined.decode()
