"""A loaded voice's health as typed values: its backends, NPU cores and fallback counts."""

from __future__ import annotations

from ..decoders.base import StageBackend
from ..health import FallbackHealth, NpuCoreHealth, NpuStageHealth, VoiceHealth
from .voice_runtime import LoadedVoice


def voice_health(voice: LoadedVoice, reason: str) -> VoiceHealth:
    """Safe on the event loop while workers decode: the fallback counters are copied under their lock."""
    counters = voice.fallback_counters.as_dict()
    return VoiceHealth(
        name=voice.name,
        backend=voice.decoder.name,
        reason=reason,
        decoder=voice.decoder.name,
        flow=voice.flow.name if voice.flow is not None else "cpu (whole)",
        npu_decoder=_npu_stage(voice.decoder),
        npu_flow=_npu_stage(voice.flow),
        fallback=FallbackHealth(**counters),
    )


def _npu_stage(backend: StageBackend | None) -> NpuStageHealth | None:
    """From `NpuStageBackend.describe()`; None for a stage that does not run on the NPU."""
    describe = getattr(backend, "describe", None)
    if describe is None:
        return None
    described = describe()
    cores = tuple(
        NpuCoreHealth(int(index), bool(core["in_service"]), int(core["windows"]), int(core["failures"]))
        for index, core in described["cores"].items()
    )
    return NpuStageHealth(described["window"], cores)
