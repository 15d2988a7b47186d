"""The cost of one Prometheus scrape of `GET /metrics`, beside `GET /healthz` (the same health snapshot
rendered as JSON) as its peer, against one real daemon in one run (issue 11, part 5).

    .venv/bin/python -m benchmarks.metrics_cost [--scrapes 200]

Run it from the checkout's root (`-m`). The daemon runs as a subprocess on loopback with the defaults a user
gets (`protocols.running_daemon`). A few short sentences are spoken first, so the request counters and the
histograms carry labels and buckets as on a daemon in service. Then the two routes are fetched in turn,
`--scrapes` times each, on one keep-alive connection (as Prometheus scrapes), and the median and p95 wall time
of each (request sent to body read) are reported, with the body's size.

JSON on stdout, a short table on stderr. Exit code 0 whatever the figures are; 1 when the daemon fails.
"""

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
from benchmarks.compare_piper import RunFacts, ServerFailed, measure_and_emit
from benchmarks.protocols import daemon_facts, running_daemon

ROUTES: Final = ("/metrics", "/healthz")
WARM_UP_REQUESTS: Final = 3


@dataclass(frozen=True)
class RouteCost:
    median_ms: float
    p95_ms: float
    body_bytes: int


@dataclass
class Report(RunFacts):
    daemon: dict[str, Any]
    scrapes: int
    routes: dict[str, RouteCost]
    metrics_over_healthz: float


async def fetch(session: aiohttp.ClientSession, url: str) -> tuple[float, int]:
    started = time.perf_counter()
    async with session.get(url) as response:
        body = await response.read()
        if response.status != 200:
            raise ServerFailed(f"{url}: HTTP {response.status}")
    return time.perf_counter() - started, len(body)


async def timed(base_url: str, scrapes: int) -> dict[str, RouteCost]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:  # keep-alive
        for _ in range(WARM_UP_REQUESTS):
            async with session.post(f"{base_url}/api/tts", json={"text": SENTENCE, "format": "opus"}) as response:
                await response.read()
                if response.status != 200:
                    raise ServerFailed(f"/api/tts: HTTP {response.status}")
        seconds: dict[str, list[float]] = {route: [] for route in ROUTES}
        sizes: dict[str, int] = {}
        for _ in range(scrapes):
            for route in ROUTES:  # in turn: machine noise hits both alike
                took, sizes[route] = await fetch(session, f"{base_url}{route}")
                seconds[route].append(took)
    return {route: RouteCost(_ms(statistics.median(runs)), _ms(statistics.quantiles(runs, n=20)[-1]), sizes[route])
            for route, runs in seconds.items()}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)  # a scrape takes about a millisecond: compare_piper's 0.1 ms is too coarse


def measure(scrapes: int, folder: Path) -> Report:
    facts = RunFacts.now(f"python -m benchmarks.metrics_cost --scrapes {scrapes}")
    with running_daemon(folder) as base_url:
        daemon = daemon_facts(base_url)
        routes = asyncio.run(timed(base_url, scrapes))
    ratio = round(routes["/metrics"].median_ms / routes["/healthz"].median_ms, 2)
    return Report(**vars(facts), daemon=daemon, scrapes=scrapes, routes=routes, metrics_over_healthz=ratio)


def print_table(report: Report) -> None:
    report.print_header()
    print(f"{report.scrapes} fetches each, one keep-alive connection:", file=sys.stderr)
    for route, cost in report.routes.items():
        print(f"  {route:<9} median {cost.median_ms:6.2f} ms  p95 {cost.p95_ms:6.2f} ms  {cost.body_bytes} bytes",
              file=sys.stderr)
    print(f"  /metrics / /healthz (median): {report.metrics_over_healthz}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scrapes", type=int, default=200, help="fetches of each route (median and p95 taken)")
    args = parser.parse_args()
    if args.scrapes < 2:
        parser.error("--scrapes must be at least 2")
    return measure_and_emit("metrics-cost-", lambda folder: measure(args.scrapes, folder), print_table)


if __name__ == "__main__":
    sys.exit(main())
