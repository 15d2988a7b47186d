"""Many clients at once against the real daemon: who is admitted, who is told busy, how fast the admitted
get their first audio, whether the LAN health check still answers, and the daemon's peak memory.

    .venv/bin/python -m benchmarks.overload [--clients 50] [--rounds 1]

Starts `appliance serve` (default configuration but the phrase cache off, CPU decoder) as a subprocess on
loopback, sends `--clients` concurrent 200-character requests (Ogg Opus, the default format) per round, and
prints JSON. The contract it checks (also asserted by tests/test_hostile_clients.py): every answer is either
a complete 200 stream or a 503 with `Retry-After` and `{"error": {"code": "busy"}}`; nobody's stream is cut."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

from tests.daemon_process import running_daemon

NO_CACHE = "[cache]\nenabled = false\n"
"""Every client sends the same text: with the phrase cache on, all but the first would be played from it."""
TEXT_200 = ("The library opens at nine in the morning and closes at six in the evening. "
            "Please return your books on time, and ask at the front desk if you need help finding anything today.")


@dataclass
class ClientResult:
    status: int
    first_audio_s: float | None
    answered_s: float
    """Until the status line and headers arrived."""
    total_s: float
    complete: bool
    retry_after: str | None = None
    error_code: str | None = None


async def one_client(session: aiohttp.ClientSession, url: str, text: str) -> ClientResult:
    started = time.monotonic()
    try:
        async with session.post(f"{url}/api/tts", json={"text": text}) as response:
            answered = time.monotonic() - started
            if response.status != 200:
                body = await response.json(content_type=None)
                return ClientResult(response.status, None, answered, time.monotonic() - started, True,
                                    response.headers.get("Retry-After"), body.get("error", {}).get("code"))
            first = await response.content.readany()
            first_at = time.monotonic() - started if first else None
            try:
                while await response.content.readany():
                    pass
                complete = True
            except aiohttp.ClientPayloadError:
                complete = False
            return ClientResult(200, first_at, answered, time.monotonic() - started, complete)
    except (aiohttp.ClientError, TimeoutError) as e:
        return ClientResult(0, None, time.monotonic() - started, time.monotonic() - started, False,
                            error_code=type(e).__name__)


async def probe_health(session: aiohttp.ClientSession, url: str, stop: asyncio.Event,
                       latencies: list[float]) -> None:
    while not stop.is_set():
        started = time.monotonic()
        async with session.get(f"{url}/healthz") as response:
            await response.read()
        latencies.append(time.monotonic() - started)
        await asyncio.sleep(0.05)


async def overload(url: str, clients: int, text: str = TEXT_200) -> tuple[list[ClientResult], list[float]]:
    """`clients` requests at once; returns each client's result and the /healthz latencies meanwhile."""
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        stop = asyncio.Event()
        latencies: list[float] = []
        prober = asyncio.create_task(probe_health(session, url, stop, latencies))
        results = await asyncio.gather(*(one_client(session, url, text) for _ in range(clients)))
        stop.set()
        await prober
    return list(results), latencies


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def summarise(results: list[ClientResult], latencies: list[float]) -> dict:
    admitted = [r for r in results if r.status == 200]
    busy = [r for r in results if r.status == 503]
    first = [r.first_audio_s for r in admitted if r.first_audio_s is not None]
    ms = lambda v: None if v is None else round(v * 1000, 1)  # noqa: E731
    return {
        "clients": len(results),
        "admitted": len(admitted),
        "rejected_busy": len(busy),
        "other": [asdict(r) for r in results if r.status not in (200, 503)],
        "cut_streams": sum(1 for r in admitted if not r.complete),
        "admitted_first_audio_ms": {f"p{q}": ms(percentile(first, q)) for q in (50, 95, 99)} | {"max": ms(max(first))
                                                                                              if first else None},
        "busy_answer_ms": {"p50": ms(percentile([r.answered_s for r in busy], 50)),
                           "max": ms(max((r.answered_s for r in busy), default=None))},
        "healthz_ms": {"p50": ms(percentile(latencies, 50)), "p99": ms(percentile(latencies, 99)),
                       "max": ms(max(latencies, default=None)), "probes": len(latencies)},
    }


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, running_daemon(Path(folder), NO_CACHE) as daemon:
        rss_idle = peak_rss_mb(daemon.pid)
        rounds = []
        for _ in range(args.rounds):
            results, latencies = asyncio.run(overload(daemon.lan_url, args.clients))
            rounds.append(summarise(results, latencies))
        with urllib.request.urlopen(f"{daemon.lan_url}/healthz") as answer:
            health = json.loads(answer.read())
        report = {
            "date": time.strftime("%Y-%m-%d"),
            "command": f".venv/bin/python -m benchmarks.overload --clients {args.clients} --rounds {args.rounds}",
            "max_streams": health["streams"]["max"],
            "rounds": rounds,
            "daemon_peak_rss_mb": {"after_start": rss_idle, "after_load": peak_rss_mb(daemon.pid)},
            "admitted_first_audio_p95_ms_worst_round": max(
                (r["admitted_first_audio_ms"]["p95"] or 0) for r in rounds),
            "healthz_median_ms": statistics.median(r["healthz_ms"]["p50"] for r in rounds),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
