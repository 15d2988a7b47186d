"""The phrase cache's worth: first audio of a sentence from the cache against the same sentence synthesised, and
how fast pre-rendering fills the cache.

    .venv/bin/python -m benchmarks.cache_speed [--repeat 5] [--phrases 20]

Our daemon runs as a subprocess on loopback with the shipped defaults (mDNS off, a temporary state folder, so
an empty cache). First audio: `--repeat` times, a sentence with a seed not used before (so it is not cached) is
asked for over `POST /api/tts` as PCM (a miss), then, once /healthz shows it stored, the same again (a hit); the
clock runs from sending the request to the first body bytes. Pre-rendering: `--phrases` distinct sentences are
posted to /api/cache/prerender and the clock runs until /healthz counts them done; audio seconds come from the
bytes the cache grew by. Medians; target: a cached sentence's first audio within 10 ms.

JSON on stdout (RunFacts first, like the other benchmarks), a table on stderr."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp

from appliance.bench import SENTENCE
from appliance.synthesis.cache_files import HEADER_BYTES
from benchmarks.compare_piper import RunFacts, Target, measure_and_emit
from benchmarks.protocols import daemon_facts, running_daemon

TARGET_HIT_MS: Final = 10.0
POLL_S: Final = 0.02
WAIT_S: Final = 600.0
WORDS: Final = ("red", "green", "blue", "yellow", "purple", "orange", "silver", "golden", "black", "white")


@dataclass
class FirstAudio:
    miss_ms: list[float]
    hit_ms: list[float]
    miss_median_ms: float
    hit_median_ms: float
    ratio: float
    """Miss over hit (median over median)."""


@dataclass
class Prerender:
    phrases: int
    seconds: float
    sentences_per_s: float
    audio_seconds: float
    audio_seconds_per_s: float


@dataclass
class Report(RunFacts):
    daemon: dict[str, Any]
    text: str
    first_audio: FirstAudio
    prerender: Prerender
    targets: dict[str, Target]


async def cache_health(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}/healthz") as response:
        return (await response.json())["cache"]


async def wait_until(session: aiohttp.ClientSession, url: str, ready: Any) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while not ready(cache := await cache_health(session, url)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the cache did not get there within {WAIT_S:g} s: {cache}")
        await asyncio.sleep(POLL_S)
    return cache


async def first_audio_ms(session: aiohttp.ClientSession, url: str, seed: int, expected: str) -> float:
    started = time.perf_counter()
    async with session.post(f"{url}/api/tts", json={"text": SENTENCE, "format": "pcm", "seed": seed}) as response:
        if response.status != 200 or response.headers.get("X-Cache") != expected:
            raise RuntimeError(f"HTTP {response.status}, X-Cache {response.headers.get('X-Cache')}, not {expected}")
        await response.content.readany()
        first = (time.perf_counter() - started) * 1000
        await response.read()
    return round(first, 2)


async def measure_first_audio(url: str, repeat: int) -> FirstAudio:
    misses, hits = [], []
    async with aiohttp.ClientSession() as session:
        for seed in range(1000, 1000 + repeat):
            entries = (await cache_health(session, url))["entries"]
            misses.append(await first_audio_ms(session, url, seed, "miss"))
            await wait_until(session, url, lambda c, n=entries: c["entries"] > n)
            hits.append(await first_audio_ms(session, url, seed, "hit"))
    miss, hit = statistics.median(misses), statistics.median(hits)
    return FirstAudio(misses, hits, miss, hit, round(miss / hit, 1))


async def measure_prerender(url: str, phrases: int, sample_rate: int) -> Prerender:
    texts = [f"The {WORDS[n % len(WORDS)]} light means that door {n} is open." for n in range(phrases)]
    async with aiohttp.ClientSession() as session:
        before = await cache_health(session, url)
        done_before = before["prerender"]["done"]
        started = time.perf_counter()
        async with session.post(f"{url}/api/cache/prerender", json={"texts": texts}) as response:
            if response.status != 202:
                raise RuntimeError(f"prerender: HTTP {response.status}: {await response.text()}")
        after = await wait_until(session, url, lambda c: c["prerender"]["done"] >= done_before + len(texts))
        seconds = time.perf_counter() - started
    grown = after["bytes"] - before["bytes"] - HEADER_BYTES * (after["entries"] - before["entries"])
    audio_seconds = grown / 4 / sample_rate
    return Prerender(len(texts), round(seconds, 2), round(len(texts) / seconds, 2), round(audio_seconds, 2),
                     round(audio_seconds / seconds, 2))


def measure(repeat: int, phrases: int, folder: Path) -> Report:
    facts = RunFacts.now(f"python -m benchmarks.cache_speed --repeat {repeat} --phrases {phrases}")
    with running_daemon(folder, phrase_cache=True) as url:
        daemon = daemon_facts(url)
        first = asyncio.run(measure_first_audio(url, repeat))
        prerender = asyncio.run(measure_prerender(url, phrases, sample_rate=22050))
    met = first.hit_median_ms <= TARGET_HIT_MS
    return Report(**vars(facts), daemon=daemon, text=SENTENCE, first_audio=first, prerender=prerender,
                  targets={"cached_first_audio_ms": Target(first.hit_median_ms, f"<= {TARGET_HIT_MS:g}", met)})


def print_table(report: Report) -> None:
    report.print_header()
    first, pre = report.first_audio, report.prerender
    print(f"first audio, {report.text!r} as PCM (median of {len(first.hit_ms)}):", file=sys.stderr)
    print(f"  synthesised {first.miss_median_ms:8.1f} ms   from the cache {first.hit_median_ms:6.1f} ms   "
          f"({first.ratio}x)", file=sys.stderr)
    print(f"pre-render: {pre.phrases} sentences in {pre.seconds} s: {pre.sentences_per_s} sentences/s, "
          f"{pre.audio_seconds_per_s} s of audio per second", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--phrases", type=int, default=20)
    args = parser.parse_args()
    return measure_and_emit("cache-speed-", lambda folder: measure(args.repeat, args.phrases, folder), print_table)


if __name__ == "__main__":
    sys.exit(main())
