"""`GET /metrics`: the engine's health snapshot in Prometheus' text format. The one file that knows
prometheus-client.

Nothing is counted here: each scrape takes one `SpeechEngine.health()` snapshot and renders it as metric
families (the owners of the numbers are the engine, its request statistics, the voices' NPU stages and
fallback counters, the phrase cache and the event-loop probe). Each Application has its own registry, holding
this collector and the process and platform collectors; prometheus-client's global registry is not used.

Threading: event-loop thread only (the snapshot is taken there, and a scrape renders in well under a
millisecond of work besides reading /proc).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector

from ..app_keys import ENGINE
from ..health import CacheHealth, HealthSnapshot, LoopLag, RequestsHealth, VoiceHealth
from .routes import ApiRoutes

PREFIX = "appliance"

SnapshotSource = Callable[[], HealthSnapshot]


def add_metrics_routes(app: web.Application, routes: ApiRoutes) -> None:
    """`routes.metrics` on `app`, rendering `app`'s engine through a registry of its own."""
    registry = metrics_registry(lambda: app[ENGINE].health())

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})

    app.router.add_get(routes.metrics, metrics)


def metrics_registry(source: SnapshotSource) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(source))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


class SnapshotCollector(Collector):
    """Metric families built afresh from one health snapshot per scrape."""

    def __init__(self, source: SnapshotSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        snapshot = self._source()
        yield _gauge("build_info", "The running version (value 1).", 1, version=snapshot.version)
        yield from _streams(snapshot)
        if snapshot.requests is not None:
            yield from _requests(snapshot.requests)
        yield from _voices(snapshot.voices)
        if snapshot.cache is not None:  # the phrase cache is off: its metrics are left out
            yield from _cache(snapshot.cache)
        if snapshot.event_loop is not None:
            yield from _loop_lag(snapshot.event_loop)
        if snapshot.wyoming is not None:
            yield _gauge("wyoming_connections", "Open Wyoming connections.", snapshot.wyoming.connections)


def _streams(snapshot: HealthSnapshot) -> Iterator[Metric]:
    streams = snapshot.streams
    yield _gauge("streams_active", "Synthesis streams running now.", streams.active)
    yield _gauge("streams_max", "Synthesis streams admitted at once.", streams.max)
    yield _gauge("streams_waiting", "Requests waiting for a synthesis stream.", streams.waiting)
    yield _counter("streams_rejected", "Requests refused as busy: no stream became free in time.",
                   streams.rejected_busy)
    yield _counter("windows", "Audio windows streamed to clients, any backend.", streams.windows)


def _requests(requests: RequestsHealth) -> Iterator[Metric]:
    total = CounterMetricFamily(f"{PREFIX}_requests", "Finished requests by transport, audio format and outcome "
                                "(ok, client_gone, cancelled, failed, rejected_busy, bad_request).",
                                labels=("transport", "format", "outcome"))
    for transport, audio_format, outcome, count in requests.outcomes:
        total.add_metric((transport, audio_format, outcome), count)
    yield total
    yield _counter("audio_seconds", "Seconds of audio synthesised for requests.", requests.audio_seconds)
    yield _histogram("first_audio_seconds", "From asking for a synthesis stream to the first audio bytes sent "
                     "(requests whose text was whole from the start).", requests.first_audio_buckets,
                     requests.first_audio_counts, requests.first_audio_count, requests.first_audio_sum)
    yield _histogram("realtime_factor", "Synthesis wall time / audio time of requests that ended ok with "
                     "their whole text (below 1: faster than real time).", requests.realtime_factor_buckets,
                     requests.realtime_factor_counts, requests.realtime_factor_count, requests.realtime_factor_sum)


def _voices(voices: Sequence[VoiceHealth]) -> Iterator[Metric]:
    windows: dict[str, int] = defaultdict(int)
    fallbacks = 0
    failures = CounterMetricFamily(f"{PREFIX}_npu_failures", "NPU calls that failed or hung, by voice, stage "
                                   "(decoder, flow) and core.", labels=("voice", "stage", "core"))
    in_service = GaugeMetricFamily(f"{PREFIX}_npu_core_in_service", "1 while an NPU core serves a stage, 0 while "
                                   "it rests after a failure.", labels=("voice", "stage", "core"))
    for voice in voices:
        windows["npu"] += voice.fallback.npu_windows
        windows["cpu_fallback"] += voice.fallback.cpu_fallback_windows
        fallbacks += voice.fallback.requests_fallen_back
        for stage_name, stage in (("decoder", voice.npu_decoder), ("flow", voice.npu_flow)):
            for core in stage.cores if stage is not None else ():
                labels = (voice.name, stage_name, str(core.index))
                failures.add_metric(labels, core.failures)
                in_service.add_metric(labels, int(core.in_service))
    decoded = CounterMetricFamily(f"{PREFIX}_decoder_windows", "Windows of the NPU-compiled stages (decoder and "
                                  "flow), by where they ran: npu, or cpu_fallback after an NPU failure.",
                                  labels=("backend",))
    for backend in ("npu", "cpu_fallback"):
        decoded.add_metric((backend,), windows[backend])
    yield decoded
    yield failures
    yield in_service
    yield _counter("fallbacks", "Requests that went on on the CPU after an NPU window failed.", fallbacks)


def _cache(cache: CacheHealth) -> Iterator[Metric]:
    yield _counter("cache_hits", "Sentences played from the phrase cache.", cache.hits)
    yield _counter("cache_misses", "Sentences synthesised because the phrase cache did not have them.", cache.misses)
    yield _gauge("cache_bytes", "Bytes of audio in the phrase cache.", cache.bytes)
    yield _gauge("cache_max_bytes", "The phrase cache's size limit in bytes.", cache.max_bytes)
    yield _gauge("cache_entries", "Sentences in the phrase cache.", cache.entries)


def _loop_lag(lag: LoopLag) -> Iterator[Metric]:
    quantiles = GaugeMetricFamily(f"{PREFIX}_event_loop_lag_seconds", f"How late the event loop ran a timer, "
                                  f"over the last {lag.window_s:g} s.", labels=("quantile",))
    quantiles.add_metric(("0.5",), lag.lag_p50_ms / 1000)
    quantiles.add_metric(("0.99",), lag.lag_p99_ms / 1000)
    yield quantiles
    yield _gauge("event_loop_lag_max_seconds", f"The event loop's largest lag over the last {lag.window_s:g} s.",
                 lag.lag_max_ms / 1000)


def _gauge(name: str, documentation: str, value: float, **labels: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=tuple(labels))
    family.add_metric(tuple(labels.values()), value)
    return family


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    """`name` without `_total`: prometheus-client appends it."""
    return CounterMetricFamily(f"{PREFIX}_{name}", documentation, value=value)


def _histogram(name: str, documentation: str, bounds: Sequence[float], cumulative: Sequence[int], count: int,
               total: float) -> HistogramMetricFamily:
    buckets = [(_le(bound), float(below)) for bound, below in zip(bounds, cumulative, strict=True)]
    buckets.append(("+Inf", float(count)))
    return HistogramMetricFamily(f"{PREFIX}_{name}", documentation, buckets=buckets, sum_value=total)


def _le(bound: float) -> str:
    return repr(float(bound))  # "0.5", "1.0": how Prometheus' own clients write `le`
