"""The daemon's health as typed values: what /healthz, the systemd status line, the mDNS TXT record and (later)
/metrics render. Types only; the state they describe stays with its owners (the engine, the tunnel supervisor,
the mDNS announcer, the watchdog pinger, the event-loop probe), and `SpeechEngine.health()` puts it together.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum


class HealthPart(Enum):
    """Which part of the snapshot changed, as told to the HealthBoard's listeners."""

    STREAMS = "streams"
    TUNNEL = "tunnel"
    MDNS = "mdns"
    WATCHDOG = "watchdog"


@dataclass(frozen=True)
class NpuCoreHealth:
    index: int
    in_service: bool
    """False while the core rests after a failure or a hung call."""
    windows: int
    failures: int


@dataclass(frozen=True)
class NpuStageHealth:
    """One windowed stage (flow or decoder) compiled for the NPU: one runtime context per core."""

    window: int | None
    cores: tuple[NpuCoreHealth, ...]


@dataclass(frozen=True)
class FallbackHealth:
    """A voice's NPU windows and the windows the CPU decoded instead, since start-up."""

    npu_windows: int = 0
    cpu_fallback_windows: int = 0
    npu_failures: int = 0
    requests_fallen_back: int = 0
    last_error: str | None = None


@dataclass(frozen=True)
class VoiceHealth:
    name: str
    backend: str
    """Where the decoder runs: 'npu' or 'cpu' (chosen at start-up)."""
    reason: str
    """Why, in words (start-up's backend choice)."""
    decoder: str
    flow: str
    """The flow's backend, or 'cpu (per decoder window)' when the CPU runs it for each decoder window."""
    npu_decoder: NpuStageHealth | None = None
    npu_flow: NpuStageHealth | None = None
    fallback: FallbackHealth = FallbackHealth()

    @property
    def npu_cores_in_service(self) -> int:
        """NPU cores that every NPU stage of this voice can use now (0 for a voice on the CPU)."""
        stages = [stage for stage in (self.npu_decoder, self.npu_flow) if stage is not None]
        if not stages:
            return 0
        usable = [{core.index for core in stage.cores if core.in_service} for stage in stages]
        return len(set.intersection(*usable))


@dataclass(frozen=True)
class StreamsHealth:
    active: int
    completed: int
    cancelled: int
    max: int
    """Streams admitted at once."""
    waiting: int
    """Requests waiting for a stream."""
    rejected_busy: int
    """Requests refused as busy (503) since start-up."""
    windows: int
    """Audio windows decoded since start-up."""


class TunnelState(StrEnum):
    DISABLED = "disabled"
    CONNECTING = "connecting"
    """ssh started, the forward not confirmed yet."""
    UP = "up"
    BACKOFF = "backoff"
    REFUSED = "refused"
    """Won't connect until something is fixed (config, a missing or mismatched pinned host key)."""
    STOPPED = "stopped"


@dataclass(frozen=True)
class TunnelHealth:
    state: TunnelState
    reason: str | None = None
    """Why it is refused: 'config', 'known_hosts' or 'host_key'."""
    last_error: str | None = None
    reconnects: int = 0
    hub: str | None = None
    remote_port: int | None = None


class MdnsState(StrEnum):
    DISABLED = "disabled"
    STARTING = "starting"
    WAITING = "waiting for an address"
    ANNOUNCED = "announced"
    ERROR = "error"
    STOPPED = "stopped"


@dataclass(frozen=True)
class MdnsHealth:
    state: MdnsState
    name: str | None = None
    """The instance name as finally registered, after any rename on a conflict."""
    services: tuple[str, ...] = ()
    host: str | None = None
    port: int | None = None
    addresses: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class WatchdogHealth:
    """The outcome of the systemd watchdog's last tick."""

    healthy: bool
    reason: str = ""
    """Why not, for the journal and the status line; empty when healthy."""


@dataclass(frozen=True)
class LoopLag:
    """How late the event loop ran a timer, over the last `window_s` seconds."""

    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    window_s: float
    samples: int


@dataclass(frozen=True)
class WyomingHealth:
    """The Wyoming listener (Home Assistant): where it listens and its connections since start-up."""

    listening: bool
    host: str | None = None
    port: int | None = None
    connections: int = 0
    """Open now."""
    refused: int = 0
    """Connections closed at once because the connection cap was reached."""
    errors: int = 0
    """`error` events sent (bad events, unknown voices, busy, failed synthesis)."""


@dataclass(frozen=True)
class PrerenderHealth:
    """Phrases queued for pre-rendering (start-up's `cache.prerender` file and POST /api/cache/prerender)."""

    queued: int
    done: int
    failed: int


@dataclass(frozen=True)
class CacheHealth:
    """The phrase cache: sentence audio kept in the state folder, since start-up (bytes: now)."""

    hits: int
    """Sentences played from the cache."""
    misses: int
    """Sentences synthesised because the cache did not have them."""
    entries: int
    bytes: int
    max_bytes: int
    rejected_files: int = 0
    """Corrupt or truncated cache files found and removed instead of played."""
    prerender: PrerenderHealth | None = None


@dataclass(frozen=True)
class RequestsHealth:
    """Finished requests over every transport, since start-up: what /metrics renders as counters and
    histograms. Histograms are cumulative bucket counts against `*_buckets` upper bounds (Prometheus' `le`)."""

    outcomes: tuple[tuple[str, str, str, int], ...]
    """(transport, format, outcome, count)."""
    audio_seconds: float
    first_audio_buckets: tuple[float, ...]
    first_audio_counts: tuple[int, ...]
    first_audio_sum: float
    first_audio_count: int
    realtime_factor_buckets: tuple[float, ...]
    realtime_factor_counts: tuple[int, ...]
    realtime_factor_sum: float
    realtime_factor_count: int


@dataclass(frozen=True)
class HealthSnapshot:
    version: str
    default_voice: str
    voices: tuple[VoiceHealth, ...]
    streams: StreamsHealth
    tunnel: TunnelHealth | None = None
    """None until the tunnel's lifecycle has reported (likewise mdns)."""
    mdns: MdnsHealth | None = None
    watchdog: WatchdogHealth | None = None
    """None while systemd asks for no watchdog pings (or before the first tick)."""
    event_loop: LoopLag | None = None
    """None when no event-loop probe runs (an engine used outside the daemon)."""
    wyoming: WyomingHealth | None = None
    """None when the Wyoming listener is disabled."""
    cache: CacheHealth | None = None
    """None when the phrase cache is off."""
    requests: RequestsHealth | None = None
    """None until a request-statistics owner reports (an engine used outside the daemon)."""
