"""How fast `POST /api/timings` answers for a paragraph, against `/api/tts` for the same paragraph and seed in
the same run, one daemon:

    .venv/bin/python -m benchmarks.timings_speed [--repeat 5]

Run it from the checkout's root (`-m`). The daemon runs as a subprocess on loopback with the defaults a user
gets (`protocols.running_daemon`). Each repeat asks for the timings, then the audio (`format: pcm`, so the first
body byte is audio), each on a fresh connection; the figures are medians over `--repeat`:

- `timings_s`: from sending the request to the whole JSON answer (only the prelude runs: no flow, no decoder);
- `tts_first_audio_s` and `tts_total_s`: the same request's audio, first byte and whole body.

The timings' `duration` is checked against the audio's length (they must agree: the same seed gives the same
durations). JSON on stdout, a short table on stderr. Exit code 1 when the daemon fails or a route does not
answer a complete 200.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from appliance.bench import PARAGRAPH
from benchmarks.compare_piper import RunFacts, ServerFailed, measure_and_emit, ms, new_session
from benchmarks.protocols import running_daemon

SEED: Final = 7
SAMPLE_BYTES: Final = 2  # pcm: s16le


@dataclass(frozen=True)
class Repeat:
    timings_s: float
    tts_first_audio_s: float
    tts_total_s: float
    words: int
    duration_s: float
    audio_s: float


@dataclass
class Report(RunFacts):
    text_chars: int
    repeats: list[Repeat]
    median_ms: dict[str, float | None]
    timings_over_tts_first_audio: float


async def one_repeat(base_url: str) -> Repeat:
    body = {"text": PARAGRAPH, "seed": SEED}
    async with new_session() as session:
        started = time.perf_counter()
        async with session.post(f"{base_url}/api/timings", json=body) as response:
            answer = await response.json()
            if response.status != 200:
                raise ServerFailed(f"/api/timings answered {response.status}: {answer}")
        timings_s = time.perf_counter() - started
    async with new_session() as session:
        started = time.perf_counter()
        first = None
        size = 0
        async with session.post(f"{base_url}/api/tts", json={**body, "format": "pcm"}) as response:
            if response.status != 200:
                raise ServerFailed(f"/api/tts answered {response.status}")
            async for chunk in response.content.iter_any():
                first = first or time.perf_counter() - started
                size += len(chunk)
        total_s = time.perf_counter() - started
    audio_s = size / SAMPLE_BYTES / answer["sample_rate"]
    if first is None or abs(answer["duration"] - audio_s) > 1e-3:
        raise ServerFailed(f"timings say {answer['duration']} s, the audio is {audio_s} s")
    return Repeat(timings_s, first, total_s, len(answer["words"]), answer["duration"], audio_s)


def measure(repeat: int, folder: Path, command: str) -> Report:
    facts = RunFacts.now(command)
    facts.print_header()
    with running_daemon(folder) as base_url:
        repeats = [asyncio.run(one_repeat(base_url)) for _ in range(repeat)]
    medians = {key: statistics.median(getattr(r, key) for r in repeats)
               for key in ("timings_s", "tts_first_audio_s", "tts_total_s")}
    return Report(**vars(facts), text_chars=len(PARAGRAPH), repeats=repeats,
                  median_ms={key.removesuffix("_s"): ms(value) for key, value in medians.items()},
                  timings_over_tts_first_audio=round(medians["timings_s"] / medians["tts_first_audio_s"], 2))


def print_table(report: Report) -> None:
    median = report.median_ms
    print(f"paragraph ({report.text_chars} chars, {report.repeats[0].words} words, "
          f"{report.repeats[0].audio_s:.2f} s of audio), medians of {len(report.repeats)}:", file=sys.stderr)
    print(f"  /api/timings          {median['timings']} ms", file=sys.stderr)
    print(f"  /api/tts first audio  {median['tts_first_audio']} ms", file=sys.stderr)
    print(f"  /api/tts total        {median['tts_total']} ms", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each request (median taken)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    command = " ".join(["python -m benchmarks.timings_speed", *sys.argv[1:]])
    return measure_and_emit("timings-", lambda folder: measure(args.repeat, folder, command), print_table)


if __name__ == "__main__":
    sys.exit(main())
