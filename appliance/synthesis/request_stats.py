"""Finished requests over every transport, since start-up: the owner of `RequestsHealth`, which /metrics renders.

Requests are recorded where every transport passes: `SpeechEngine.prepare` (refused), `SpeechEngine.slot`
(busy) and `output.play` (everything that streamed). Threading: event-loop thread only (all three run there).
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from ..health import RequestsHealth

FIRST_AUDIO_BUCKETS_S: Final = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
"""Upper bounds (seconds) for the wait before the first audio: fine below the 1 s target, coarse above it."""
REALTIME_FACTOR_BUCKETS: Final = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)
"""Upper bounds for wall time / audio time: below 1 is faster than real time."""


class Outcome(StrEnum):
    """How a request ended: the `outcome` label of `appliance_requests_total`."""

    OK = "ok"
    """All its audio went to the client."""
    CLIENT_GONE = "client_gone"
    """The client went away, or stopped taking audio, before the end."""
    CANCELLED = "cancelled"
    """Stopped by the server side: barge-in (WebSocket cancel), a connection closed mid-utterance."""
    FAILED = "failed"
    """Synthesis or encoding failed."""
    REJECTED_BUSY = "rejected_busy"
    """No synthesis stream became free within `synthesis.queue_s`."""
    BAD_REQUEST = "bad_request"
    """Refused by the engine's checks (text, voice, speaker, options) before anything was synthesised."""


@dataclass
class FixedHistogram:
    """Observations counted against fixed upper bounds (Prometheus' `le`), plus +Inf, their sum and count."""

    buckets: tuple[float, ...]
    counts: list[int] = field(init=False)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)  # the last: above every bound

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> tuple[int, ...]:
        """Observations at or below each bound (the +Inf bucket is `count`)."""
        running, result = 0, []
        for count in self.counts[:-1]:
            running += count
            result.append(running)
        return tuple(result)


@dataclass
class RequestStats:
    """Counts by (transport, format, outcome), audio seconds sent, and histograms of the first audio's wait
    and the real-time factor. Event-loop thread only."""

    outcomes: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    audio_seconds: float = 0.0
    first_audio: FixedHistogram = field(default_factory=lambda: FixedHistogram(FIRST_AUDIO_BUCKETS_S))
    realtime_factor: FixedHistogram = field(default_factory=lambda: FixedHistogram(REALTIME_FACTOR_BUCKETS))

    def record(self, transport: str, audio_format: str, outcome: Outcome, *, audio_seconds: float = 0.0,
               first_audio_s: float | None = None, realtime_factor: float | None = None) -> None:
        self.outcomes[(transport, audio_format, outcome.value)] += 1
        self.audio_seconds += audio_seconds
        if first_audio_s is not None:
            self.first_audio.observe(first_audio_s)
        if realtime_factor is not None:
            self.realtime_factor.observe(realtime_factor)

    def health(self) -> RequestsHealth:
        return RequestsHealth(
            outcomes=tuple((*key, count) for key, count in sorted(self.outcomes.items())),
            audio_seconds=self.audio_seconds,
            first_audio_buckets=self.first_audio.buckets,
            first_audio_counts=self.first_audio.cumulative(),
            first_audio_sum=self.first_audio.total,
            first_audio_count=self.first_audio.count,
            realtime_factor_buckets=self.realtime_factor.buckets,
            realtime_factor_counts=self.realtime_factor.cumulative(),
            realtime_factor_sum=self.realtime_factor.total,
            realtime_factor_count=self.realtime_factor.count,
        )
