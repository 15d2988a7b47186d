"""Service types and the names the appliance announces itself under."""

from __future__ import annotations

import re
from typing import Final

HTTP_SERVICE_TYPE: Final = "_http._tcp.local."
"""Generic web service type: browsers and DNS-SD tools list the appliance among web servers."""
APPLIANCE_SERVICE_TYPE: Final = "_rkspeech._tcp.local."
"""Our own type (service names are at most 15 characters, RFC 6763 §7.2) for clients that want only us."""
SERVICE_TYPES: Final = (HTTP_SERVICE_TYPE, APPLIANCE_SERVICE_TYPE)
"""Announced always, on the LAN listener's port."""
WYOMING_SERVICE_TYPE: Final = "_wyoming._tcp.local."
"""Home Assistant's Wyoming integration browses for this; announced on the Wyoming listener's port when it runs."""

_MAX_LABEL_BYTES: Final = 63
_RENAME_ROOM_BYTES: Final = 4
"""Room kept for the "-N" suffix zeroconf appends when it renames an instance after a conflict."""


def instance_name(configured: str, hostname: str) -> str:
    """The configured instance name, else '<hostname> speech', cut to fit one DNS label."""
    name = configured.strip() or f"{hostname.split('.')[0]} speech"
    return _cut_utf8(name, _MAX_LABEL_BYTES - _RENAME_ROOM_BYTES)


def host_name(hostname: str, node: int) -> str:
    """SRV target '<hostname>-speech-<6 hex of the MAC>.local.'.

    zeroconf does not probe host names, and boards flashed from one image share a hostname; a name of our
    own keeps their address records apart and out of the way of avahi's '<hostname>.local.'."""
    suffix = f"-speech-{node & 0xFFFFFF:06x}"
    label = re.sub(r"[^a-z0-9-]+", "-", hostname.split(".")[0].lower()).strip("-") or "appliance"
    return f"{label[: _MAX_LABEL_BYTES - len(suffix)]}{suffix}.local."


def _cut_utf8(text: str, max_bytes: int) -> str:
    return text.encode()[:max_bytes].decode(errors="ignore").rstrip()
