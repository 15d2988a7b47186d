"""The protocols of issue 10 against our own `/api/tts`, one daemon, one run: how soon each answers a short
sentence.

    .venv/bin/python -m benchmarks.protocols [--repeat 5]

Run it from the checkout's root (`-m`), so the checkout's `appliance` is measured. The daemon runs as a
subprocess on loopback with the defaults a user gets (started by `compare_piper`'s helpers: mDNS off, a
temporary state folder, no /etc file, no inherited APPLIANCE_* variables).

Each repeat runs every probe in turn on a fresh connection, so machine noise hits all alike; the figure is the
median over `--repeat` of the first byte of the response body after the request was sent:

- `openai_mp3`: `POST /v1/audio/speech` with `response_format: mp3` (the OpenAI-style route);
- `ours_opus`: `POST /api/tts` with `format: opus` (our own route, the reference);
- `paroli_opus`: `POST /api/v1/synthesise` with `audio_format: opus` (for information; no target).

Target (issue 10): openai_mp3 / ours_opus <= 1.2. A probe whose route is missing (404) or refuses the request
is reported as "not available" and its ratio is not measured; the script goes on. Another protocol is one more
entry in PROBES (an object with `name`, `optional` and `run`).

JSON on stdout, a short table on stderr. Exit code 0 whatever the figures are; 1 when our daemon fails or one
of our own routes does not answer a complete 200.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import aiohttp

from appliance.bench import SENTENCE
from benchmarks.compare_piper import (
    RunFacts,
    ServerFailed,
    Target,
    free_port,
    log_tail,
    measure_and_emit,
    ms,
    new_session,
    start_ours,
    stop,
    wait_ready,
)

FIRST_BYTE_RATIO_LIMIT: Final = 1.2
NOT_AVAILABLE: Final = "not available"
REFERENCE: Final = "ours_opus"


# --- one request ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProbeRun:
    status: int = 0
    """HTTP status (0: no answer)."""
    first_byte_s: float | None = None
    """From just before the request was sent to the first bytes of the body."""
    total_s: float = 0.0
    size: int = 0
    complete: bool = False
    """A 200 whose body arrived whole."""
    error: str | None = None


@dataclass(frozen=True)
class Ask:
    """What every probe asks for."""

    text: str
    voice: str
    """The daemon's default voice (OpenAI's API requires a voice; the others speak the default anyway)."""


class Probe(Protocol):
    name: str
    optional: bool
    """True for a route another branch provides: its absence is reported, not fatal."""

    async def run(self, session: aiohttp.ClientSession, base_url: str, ask: Ask) -> ProbeRun: ...


@dataclass(frozen=True)
class HttpProbe:
    name: str
    path: str
    body: Callable[[Ask], Mapping[str, Any]]
    """The JSON body."""
    optional: bool = False

    async def run(self, session: aiohttp.ClientSession, base_url: str, ask: Ask) -> ProbeRun:
        started = time.perf_counter()
        status, first, size = 0, None, 0
        try:
            async with session.post(base_url + self.path, json=dict(self.body(ask))) as response:
                status = response.status
                if status != 200:
                    error = (await response.text())[:200]
                    return ProbeRun(status, None, time.perf_counter() - started, 0, False, error)
                async for data in response.content.iter_any():
                    if first is None:
                        first = time.perf_counter() - started
                    size += len(data)
            return ProbeRun(status, first, time.perf_counter() - started, size, size > 0)
        except (aiohttp.ClientError, TimeoutError) as e:
            return ProbeRun(status, first, time.perf_counter() - started, size, False, f"{type(e).__name__}: {e}")


PROBES: Final[tuple[Probe, ...]] = (
    HttpProbe("openai_mp3", "/v1/audio/speech",
              lambda ask: {"model": "tts-1", "input": ask.text, "voice": ask.voice, "response_format": "mp3"},
              optional=True),
    HttpProbe(REFERENCE, "/api/tts", lambda ask: {"text": ask.text, "format": "opus"}),
    HttpProbe("paroli_opus", "/api/v1/synthesise", lambda ask: {"text": ask.text, "audio_format": "opus"}),
)


# --- the run --------------------------------------------------------------------------------------------------

@contextmanager
def running_daemon(folder: Path, phrase_cache: bool = False) -> Iterator[str]:
    port = free_port()
    log = folder / "ours.log"
    process = start_ours(folder, port, log, phrase_cache)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_ready("our daemon", f"{base_url}/healthz", process, log)
        yield base_url
        if process.poll() is not None:
            raise ServerFailed(f"our daemon exited with {process.returncode} during the run:\n{log_tail(log)}")
    finally:
        stop(process)


def unavailable_reason(run: ProbeRun) -> str:
    return f"{NOT_AVAILABLE} (HTTP {run.status}: {run.error})" if run.status else f"{NOT_AVAILABLE} ({run.error})"


async def interleaved(base_url: str, probes: Sequence[Probe], ask: Ask, repeat: int
                      ) -> tuple[dict[str, list[ProbeRun]], dict[str, str]]:
    """Runs per probe, in order; and the probes found unavailable (name -> why) on their warm-up request."""
    runs: dict[str, list[ProbeRun]] = {p.name: [] for p in probes}
    unavailable: dict[str, str] = {}
    async with new_session() as session:
        for probe in probes:  # warms each route's first-request path, and finds the missing ones
            run = await probe.run(session, base_url, ask)
            if not run.complete:
                if not probe.optional:
                    raise ServerFailed(f"{probe.name}: {unavailable_reason(run)}")
                unavailable[probe.name] = unavailable_reason(run)
        available = [p for p in probes if p.name not in unavailable]
        for _ in range(repeat):
            for probe in available:
                run = await probe.run(session, base_url, ask)
                if not run.complete and not probe.optional:
                    raise ServerFailed(f"{probe.name}: status {run.status}, {run.size} bytes, error={run.error}")
                runs[probe.name].append(run)
    return runs, unavailable


@dataclass(frozen=True)
class ProbeSummary:
    first_byte_ms: float | None
    """Median over the complete runs; None when none was complete."""
    total_ms: float | None
    failed_runs: int
    runs: list[dict[str, Any]]


def summarise(runs: list[ProbeRun]) -> ProbeSummary:
    good = [r for r in runs if r.complete and r.first_byte_s is not None]
    return ProbeSummary(
        first_byte_ms=ms(statistics.median(r.first_byte_s for r in good)) if good else None,
        total_ms=ms(statistics.median(r.total_s for r in good)) if good else None,
        failed_runs=len(runs) - len(good),
        runs=[{"status": r.status, "first_byte_ms": ms(r.first_byte_s), "total_ms": ms(r.total_s), "bytes": r.size,
               **({"error": r.error} if r.error else {})} for r in runs],
    )


@dataclass
class Report(RunFacts):
    daemon: dict[str, Any]
    text: str
    first_byte: dict[str, ProbeSummary | str]
    """probe name -> its summary, or "not available (...)"."""
    ratios: dict[str, float | str]
    targets: dict[str, Target]


def first_byte_target(first_byte: Mapping[str, ProbeSummary | str]) -> tuple[float | str, Target]:
    target = f"<= {FIRST_BYTE_RATIO_LIMIT:g}"
    openai, ours = first_byte["openai_mp3"], first_byte[REFERENCE]
    if isinstance(openai, str) or isinstance(ours, str) or not openai.first_byte_ms or not ours.first_byte_ms:
        return NOT_AVAILABLE, Target(None, target, None)
    value = round(openai.first_byte_ms / ours.first_byte_ms, 3)
    return value, Target(value, target, value <= FIRST_BYTE_RATIO_LIMIT)


def daemon_facts(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base_url}/healthz", timeout=10) as response:
        report = json.loads(response.read())
    streams = report.get("streams", {})
    return {"version": report.get("version"), "backend": report.get("backend"),
            "default_voice": report.get("default_voice"), "max_streams": streams.get("max"),
            "config": "shipped defaults; mdns.enabled = false, temporary service.state_folder, on 127.0.0.1"}


def measure(repeat: int, folder: Path) -> Report:
    facts = RunFacts.now(f"python -m benchmarks.protocols --repeat {repeat}")
    with running_daemon(folder) as base_url:
        daemon = daemon_facts(base_url)
        ask = Ask(SENTENCE, daemon["default_voice"])
        runs, unavailable = asyncio.run(interleaved(base_url, PROBES, ask, repeat))
    first_byte: dict[str, ProbeSummary | str] = {
        name: unavailable.get(name) or summarise(probe_runs) for name, probe_runs in runs.items()
    }
    ratio, target = first_byte_target(first_byte)
    return Report(
        **vars(facts),
        daemon=daemon,
        text=SENTENCE,
        first_byte=first_byte,
        ratios={"openai_mp3_first_byte_over_ours_opus": ratio},
        targets={"openai_mp3_first_byte_over_ours_opus": target},
    )


def print_table(report: Report) -> None:
    out = sys.stderr
    report.print_header()
    print(f"first byte of {report.text!r}:", file=out)
    for name, summary in report.first_byte.items():
        if isinstance(summary, str):
            print(f"  {name:<12} {summary}", file=out)
        else:
            shown = "-" if summary.first_byte_ms is None else f"{summary.first_byte_ms:.0f}ms"
            failed = f" ({summary.failed_runs} failed)" if summary.failed_runs else ""
            print(f"  {name:<12} {shown:>8}{failed}", file=out)
    for name, target in report.targets.items():
        met = {True: "met", False: "NOT met", None: "not measured"}[target.met]
        print(f"  {name}: {report.ratios[name]} (target {target.target}) {met}", file=out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="interleaved runs per probe (median taken)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return measure_and_emit("protocols-", lambda folder: measure(args.repeat, folder), print_table)


if __name__ == "__main__":
    sys.exit(main())
