"""Pings systemd's watchdog only while the daemon is healthy, so that a wedged daemon gets restarted.

Healthy means both:
- the event loop is responsive: this task runs on it, so a blocked loop sends nothing at all, and a loop
  so starved that a tick wakes more than `max_loop_lag_s` late skips that tick's ping;
- the inference workers answer: `WorkerProbe.probe_workers` (the engine submits a trivial job to its
  inference thread pool and waits for it) returns True within `probe_timeout_s`; workers all busy with
  jobs younger than `synthesis.stuck_job_s` count as answering (long windows on a slow CPU are work, not a
  wedge: under QEMU a 256-frame window outlasts WatchdogSec).

An unhealthy tick only skips its ping. systemd restarts the service once no ping has come for WatchdogSec,
i.e. after about two unhealthy ticks in a row, so one slow moment does not cost a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from ..health import WatchdogHealth
from .notify import SystemdNotifier

log = logging.getLogger(__name__)

MAX_LOOP_LAG_CAP_S: Final = 5.0
"""However long WatchdogSec is, a loop that wakes a tick 5 s late is not serving audio in real time."""


class WorkerProbe(Protocol):
    async def probe_workers(self, timeout_s: float) -> bool:
        """True when the inference workers ran a trivial job within `timeout_s`."""
        ...


@dataclass
class WatchdogPinger:
    notifier: SystemdNotifier
    period_s: float
    """Time between pings: half of WatchdogSec."""
    probe: WorkerProbe | None
    """None pings on event-loop liveness alone (service.watchdog = false while the unit sets WatchdogSec)."""
    on_health: Callable[[WatchdogHealth], None] | None = None
    """Told the outcome of every tick (the daemon reports it on the engine's HealthBoard)."""
    max_loop_lag_s: float | None = None
    """How late a tick may wake; default half the period, at most MAX_LOOP_LAG_CAP_S."""
    probe_timeout_s: float | None = None
    """How long the workers get to answer; default half the period."""
    _last: WatchdogHealth | None = field(default=None, init=False)

    async def run(self) -> None:
        """Tick every `period_s` until cancelled."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.period_s
        while True:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            lag = loop.time() - next_tick
            health = await self.check(lag)
            if health.healthy:
                self.notifier.watchdog()
            self._report(health)
            next_tick += self.period_s
            if next_tick < loop.time():  # after a stall, start afresh rather than ping in a burst
                next_tick = loop.time() + self.period_s

    async def check(self, loop_lag_s: float) -> WatchdogHealth:
        max_lag = self.max_loop_lag_s
        if max_lag is None:
            max_lag = min(self.period_s / 2, MAX_LOOP_LAG_CAP_S)
        if loop_lag_s > max_lag:
            return WatchdogHealth(False, f"event loop {loop_lag_s:.1f} s late")
        if self.probe is None:
            return WatchdogHealth(True)
        timeout = self.probe_timeout_s if self.probe_timeout_s is not None else self.period_s / 2
        try:
            # Our own deadline as well, in case a probe does not honour its timeout. (asyncio.timeout, not
            # wait_for: on 3.11 wait_for can swallow a cancellation that races the probe's answer.)
            async with asyncio.timeout(timeout * 1.5):
                answered = await self.probe.probe_workers(timeout)
        except TimeoutError:
            answered = False
        except Exception:  # a probe that raises is as unhealthy as one that hangs; keep watching
            log.exception("worker probe failed")
            answered = False
        return WatchdogHealth(True) if answered else WatchdogHealth(False, "inference workers not answering")

    def _report(self, health: WatchdogHealth) -> None:
        if self._last is None or health.healthy != self._last.healthy:
            if not health.healthy:
                log.warning("not pinging the systemd watchdog: %s", health.reason)
            elif self._last is not None:
                log.info("healthy again; pinging the systemd watchdog")
        self._last = health
        if self.on_health is not None:
            self.on_health(health)
