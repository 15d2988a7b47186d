"""The body of `GET /healthz`, rendered from the engine's typed health snapshot.

Keys are kept from earlier versions (clients read them); new facts are added beside them."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ..health import HealthSnapshot, NpuStageHealth, VoiceHealth


def health_json(snapshot: HealthSnapshot) -> dict[str, Any]:
    backends = sorted({voice.backend for voice in snapshot.voices})
    streams = snapshot.streams
    body: dict[str, Any] = {
        "status": "ok",
        "version": snapshot.version,
        "backend": backends[0] if len(backends) == 1 else backends,
        "voices": {voice.name: _voice(voice) for voice in snapshot.voices},
        "default_voice": snapshot.default_voice,
        "streams": asdict(streams),
        "clients": {"active": streams.active},
    }
    # Parts whose owner has not reported yet are left out, as before.
    for key, part in (("tunnel", snapshot.tunnel), ("mdns", snapshot.mdns), ("watchdog", snapshot.watchdog),
                      ("event_loop", snapshot.event_loop), ("wyoming", snapshot.wyoming),
                      ("cache", snapshot.cache)):
        if part is not None:
            body[key] = asdict(part)
    return body


def _voice(voice: VoiceHealth) -> dict[str, Any]:
    described: dict[str, Any] = {
        "backend": voice.backend,
        "reason": voice.reason,
        "decoder": voice.decoder,
        "flow": voice.flow,
        "npu_cores_in_service": voice.npu_cores_in_service,
        "fallback": asdict(voice.fallback),
    }
    if voice.npu_decoder is not None:
        described["npu"] = {"decoder": _npu_stage(voice.npu_decoder), "flow": _npu_stage(voice.npu_flow)}
    return described


def _npu_stage(stage: NpuStageHealth | None) -> dict[str, Any]:
    if stage is None:
        return {}
    return {
        "window": stage.window,
        "cores": {
            str(core.index): {"in_service": core.in_service, "windows": core.windows, "failures": core.failures}
            for core in stage.cores
        },
    }
