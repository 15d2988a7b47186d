"""A loaded voice's health as typed values: its backends, NPU cores and fallback counts."""

from __future__ import annotations

from ..decoders.base import StageBackend
from ..health import NpuStageHealth, VoiceHealth
from .voice_runtime import LoadedVoice


def voice_health(voice: LoadedVoice, reason: str) -> VoiceHealth:
    """Safe on the event loop while workers decode: counters and core states are copied under their locks."""
    return VoiceHealth(
        name=voice.name,
        backend=voice.decoder.name,
        reason=reason,
        decoder=voice.decoder.name,
        flow=voice.flow.name if voice.flow is not None else "cpu (per decoder window)",
        npu_decoder=_npu_stage(voice.decoder),
        npu_flow=_npu_stage(voice.flow),
        fallback=voice.fallback_counters.health(),
    )


def _npu_stage(backend: StageBackend | None) -> NpuStageHealth | None:
    """None for a stage that does not run on the NPU (only NPU backends report their cores)."""
    health = getattr(backend, "health", None)
    return health() if health is not None else None
