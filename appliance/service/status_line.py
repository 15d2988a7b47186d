"""The one-line summary `systemctl status appliance` shows, made from the engine's health snapshot:

    voices: en_US-joe-medium=npu(3 cores); tunnel: up; clients: 2

Each voice with its backend: NPU cores in service, or why the CPU decodes it. The tunnel once its lifecycle has
reported; the watchdog only when it is not pinging.
"""

from __future__ import annotations

from typing import Final

from ..health import HealthSnapshot, TunnelHealth, VoiceHealth, WatchdogHealth

MAX_REASON_CHARS: Final = 40
"""A CPU fallback's reason is shown, shortened: the full text is in /healthz and the journal."""


def format_status(snapshot: HealthSnapshot) -> str:
    sections = [
        _voices(snapshot.voices),
        _tunnel(snapshot.tunnel),
        f"clients: {snapshot.streams.active}",
        _watchdog(snapshot.watchdog),
    ]
    return "; ".join(section for section in sections if section)


def _voices(voices: tuple[VoiceHealth, ...]) -> str:
    return "voices: " + ", ".join(f"{voice.name}={_backend(voice)}" for voice in voices)


def _backend(voice: VoiceHealth) -> str:
    if voice.npu_decoder is not None:
        cores = voice.npu_cores_in_service
        return f"{voice.backend}({cores} core{'' if cores == 1 else 's'})"
    reason = voice.reason
    if voice.backend == "cpu" and reason:
        short = reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"
        return f"cpu({short})"
    return voice.backend


def _tunnel(tunnel: TunnelHealth | None) -> str:
    return f"tunnel: {tunnel.state}" if tunnel is not None else ""


def _watchdog(watchdog: WatchdogHealth | None) -> str:
    # Only trouble is worth the space; a healthy daemon says nothing about its watchdog.
    if watchdog is None or watchdog.healthy:
        return ""
    return f"watchdog: not pinging ({watchdog.reason or 'unhealthy'})"
