"""How late the event loop runs: a probe sleeps a short tick over and over and records how late it woke.

A handler that blocks the loop (a synchronous call, a slow encoder) delays every stream and every answer;
the probe's percentiles over the last minute show it in /healthz (`event_loop`) long after the moment passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from ..app_keys import ENGINE
from ..health import LoopLag

TICK_S: Final = 0.025
WINDOW_S: Final = 60.0


@dataclass
class LoopLagProbe:
    """Threading: event-loop thread only; its task records samples and health snapshots read them there."""

    tick_s: float = TICK_S
    window_s: float = WINDOW_S
    """Samples older than this are dropped."""
    _samples: deque[tuple[float, float]] = field(init=False)
    """(when it woke, how late) in loop time, oldest first."""

    def __post_init__(self) -> None:
        # An idle loop wakes once a tick: the window never holds more samples than that.
        self._samples = deque(maxlen=math.ceil(self.window_s / self.tick_s))

    async def run(self) -> None:
        """Measure until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.tick_s
            await asyncio.sleep(self.tick_s)
            woke = loop.time()
            self._samples.append((woke, max(0.0, woke - due)))
            self._forget_before(woke - self.window_s)

    def summary(self) -> LoopLag:
        self._forget_before(asyncio.get_running_loop().time() - self.window_s)
        lags = sorted(lag for _, lag in self._samples)
        return LoopLag(
            lag_p50_ms=_ms(_percentile(lags, 0.50)),
            lag_p99_ms=_ms(_percentile(lags, 0.99)),
            lag_max_ms=_ms(lags[-1] if lags else 0.0),
            window_s=self.window_s,
            samples=len(lags),
        )

    def _forget_before(self, oldest: float) -> None:
        while self._samples and self._samples[0][0] < oldest:
            self._samples.popleft()


async def loop_lag_context(app: web.Application) -> AsyncIterator[None]:
    """For `app.cleanup_ctx`, after the engine's: the probe runs while the app runs and the engine's health
    snapshot reads it."""
    board = app[ENGINE].health_board
    probe = LoopLagProbe()
    task = asyncio.create_task(probe.run(), name="event-loop lag probe")
    board.measure_loop_lag(probe)
    try:
        yield
    finally:
        board.measure_loop_lag(None)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _percentile(ordered: list[float], fraction: float) -> float:
    """Nearest rank: the smallest sample with at least `fraction` of the samples at or below it."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)
