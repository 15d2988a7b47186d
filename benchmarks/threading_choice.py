"""How to spend the cores: inference workers (requests and windows in parallel) against onnxruntime's own
threads inside one run. Speaks the benchmark paragraph alone, in this process, with each layout.

    .venv/bin/python -m benchmarks.threading_choice [--repeat 3]

Prints, for each (workers, onnxruntime threads per run): first audio and total, median of the repeats, and the
total against the default layout's. Run it on a quiet machine: it measures time."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from appliance.bench import PARAGRAPH
from appliance.config import ApplianceConfig, load_config
from appliance.synthesis.engine import SpeechEngine
from appliance.synthesis.loading import load_engine
from appliance.synthesis.request import SynthesisRequest


async def speak(engine: SpeechEngine, text: str) -> tuple[float, float]:
    started = time.perf_counter()
    first = None
    async for _chunk in engine.stream(engine.prepare(SynthesisRequest(text=text, seed=1))):
        first = first or time.perf_counter() - started
    return first or 0.0, time.perf_counter() - started


def measure(config: ApplianceConfig, workers: int, onnx_threads: int, repeat: int) -> dict:
    synthesis = replace(config.synthesis, inference_threads=workers, onnx_threads=onnx_threads)
    engine = load_engine(replace(config, synthesis=synthesis))
    try:
        runs = [asyncio.run(speak(engine, PARAGRAPH)) for _ in range(repeat)]
    finally:
        engine.close()
    return {"workers": workers, "onnx_threads": onnx_threads,
            "first_audio_ms": round(statistics.median(r[0] for r in runs) * 1000),
            "total_ms": round(statistics.median(r[1] for r in runs) * 1000)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    state = Path(tempfile.mkdtemp(prefix="threading-state-"))
    config = load_config(None, environ={}, overrides={"service.state_folder": str(state), "cache.enabled": False})
    layouts = [(cores, 1), (1, cores), (cores, cores), (2 * cores, 1), (1, 1)]
    results = [measure(config, workers, threads, args.repeat) for workers, threads in layouts]
    default = results[0]["total_ms"]
    for r in results:
        r["total_vs_default"] = round(r["total_ms"] / default, 2)
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "cores": cores, "load_average_before": os.getloadavg(),
                      "layouts": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
