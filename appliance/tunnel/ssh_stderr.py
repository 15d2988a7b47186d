"""What the OpenSSH client's stderr (at -v) says about the tunnel, line by line."""

from __future__ import annotations

import enum
import re
from typing import Final


class SshEvent(enum.Enum):
    FORWARD_UP = "forward_up"
    HOST_KEY_REFUSED = "host_key_refused"
    FORWARD_REFUSED = "forward_refused"
    AUTH_REFUSED = "auth_refused"


_PATTERNS: Final = (
    (SshEvent.FORWARD_UP, re.compile(r"^debug1: remote forward success for: listen ")),
    (SshEvent.HOST_KEY_REFUSED, re.compile(r"^Host key verification failed\.")),
    (SshEvent.HOST_KEY_REFUSED, re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED")),
    (SshEvent.HOST_KEY_REFUSED, re.compile(r"^No \S+ host key is known for .* strict checking")),
    (SshEvent.FORWARD_REFUSED, re.compile(r"^Error: remote port forwarding failed")),
    (SshEvent.AUTH_REFUSED, re.compile(r"^\S+: Permission denied \(")),
)


def classify(line: str) -> SshEvent | None:
    for event, pattern in _PATTERNS:
        if pattern.search(line):
            return event
    return None


def is_debug(line: str) -> bool:
    return line.startswith("debug")
