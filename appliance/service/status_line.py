"""The one-line summary `systemctl status appliance` shows, made from a StatusBoard snapshot:

    voices: en_US-joe-medium=npu(3 cores); tunnel: up; clients: 2

Board parts read: 'voices' {name: {'backend': 'npu'|'cpu', 'reason': str, 'cores': int (optional)}},
'tunnel' {'state': ...}, 'clients' {'active': int}, 'watchdog' {'healthy': bool, 'reason': str}.
Parts not on the board yet are left out; other parts are ignored.
"""

from __future__ import annotations

from typing import Any, Final

MAX_REASON_CHARS: Final = 40
"""A CPU fallback's reason is shown, shortened: the full text is in /healthz and the journal."""


def format_status(snapshot: dict[str, Any]) -> str:
    sections = [
        section
        for section in (
            _voices(snapshot.get("voices")),
            _tunnel(snapshot.get("tunnel")),
            _clients(snapshot.get("clients")),
            _watchdog(snapshot.get("watchdog")),
        )
        if section
    ]
    return "; ".join(sections) if sections else "starting"


def _voices(voices: dict[str, Any] | None) -> str:
    if not voices:
        return ""
    return "voices: " + ", ".join(f"{name}={_backend(info)}" for name, info in voices.items())


def _backend(info: Any) -> str:
    if not isinstance(info, dict):
        return "?"
    backend = str(info.get("backend", "?"))
    cores = info.get("cores")
    if isinstance(cores, int) and not isinstance(cores, bool):
        return f"{backend}({cores} core{'' if cores == 1 else 's'})"
    reason = str(info.get("reason") or "")
    if backend == "cpu" and reason:
        short = reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"
        return f"cpu({short})"
    return backend


def _tunnel(tunnel: dict[str, Any] | None) -> str:
    return f"tunnel: {tunnel.get('state', '?')}" if tunnel else ""


def _clients(clients: dict[str, Any] | None) -> str:
    return f"clients: {clients.get('active', 0)}" if clients else ""


def _watchdog(watchdog: dict[str, Any] | None) -> str:
    # Only trouble is worth the space; a healthy daemon says nothing about its watchdog.
    if not watchdog or watchdog.get("healthy", True):
        return ""
    return f"watchdog: not pinging ({watchdog.get('reason') or 'unhealthy'})"
