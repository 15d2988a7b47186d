"""`appliance bench`: time to first audio and real-time factor of the engine, for texts of three lengths and
1-3 concurrent streams. Prints figures; judging them is for the reader (see README for reference runs)."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import replace
from typing import Any

from .config import ApplianceConfig
from .decoders.npu_detect import NpuProbe
from .synthesis.engine import SpeechEngine
from .synthesis.loading import load_engine
from .synthesis.request import SynthesisRequest

SENTENCE = "The quick brown fox jumps over the lazy dog near the river."
PARAGRAPH = (
    "Welcome back. Today we will look at how the weather changes through the seasons, and why the days grow "
    "longer in summer. The earth is tilted on its axis, so for half of the year one hemisphere leans toward "
    "the sun and receives more direct light. That extra light warms the land and the oceans. In winter the "
    "same hemisphere leans away, the sun stays low in the sky, and the nights are long and cold. Let us start "
    "with a simple experiment you can do at home with a lamp and an orange."
)
LONG_TEXT = " ".join([PARAGRAPH] * 4)


async def measure(engine: SpeechEngine, text: str, voice: str | None, seed: int) -> dict[str, float]:
    prepared = engine.prepare(SynthesisRequest(text=text, voice=voice, seed=seed))
    started = time.perf_counter()
    first = None
    samples = 0
    async for chunk in engine.stream(prepared):
        first = first or time.perf_counter()
        samples += len(chunk.samples)
    total = time.perf_counter() - started
    audio_s = samples / prepared.facts.sample_rate
    return {"first_audio_ms": ((first or started) - started) * 1000, "total_ms": total * 1000,
            "audio_s": audio_s, "rtf": total / audio_s if audio_s else float("nan")}


async def run_benchmark(config: ApplianceConfig, voice: str | None, repeat: int,
                        npu: NpuProbe | None = None) -> dict[str, Any]:
    """`npu`: the board's NPU as probed already (default: probe it). The phrase cache is off: the figures are
    synthesis's, not the cache's (the runs repeat texts and seeds)."""
    config = replace(config, cache=replace(config.cache, enabled=False))
    engine = await asyncio.to_thread(load_engine, config, npu)
    try:
        name = voice or engine.default_voice
        results: dict[str, Any] = {"voice": name, "backend": engine.voices[name].decoder.name,
                                   "backend_reason": engine.backend_reasons[name],
                                   "inference_threads": engine.inference_threads, "texts": {}}
        for label, text in (("sentence", SENTENCE), ("paragraph", PARAGRAPH), ("long", LONG_TEXT)):
            runs = [await measure(engine, text, voice, seed) for seed in range(repeat)]
            results["texts"][label] = {"chars": len(text), **_median(runs)}
        results["concurrent"] = {}
        for streams in (1, 2, 3):
            runs = await asyncio.gather(*(measure(engine, PARAGRAPH, voice, s) for s in range(streams)))
            results["concurrent"][str(streams)] = {
                "first_audio_ms_max": round(max(r["first_audio_ms"] for r in runs), 1),
                "rtf_max": round(max(r["rtf"] for r in runs), 3),
                "realtime": all(r["rtf"] < 1 for r in runs),
            }
        return results
    finally:
        engine.close()


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}
