"""Admission control: at most `max_streams` streams synthesise at once; a request waits at most `queue_s`
for a free stream (first come, first served), then is refused as busy. Every transport asks here before it
starts a stream, so admitted streams stay fast however many clients arrive.

Threading: event-loop thread only (the engine owns one instance).
"""

from __future__ import annotations

import asyncio
import math
import os
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

STREAMS_PER_CORE = 2
"""Streams per decoding core (CPU or NPU): a core decodes one stream's window while another stream's next
sentence is encoded, and one stream on 2 x86 cores runs at about a tenth of real time, so two per core stay
real-time with their first audio well under a second."""


class Busy(Exception):
    """No stream became free within the wait; `retry_after_s` is a hint for the client."""

    def __init__(self, retry_after_s: int, max_streams: int) -> None:
        super().__init__(f"all {max_streams} synthesis streams are busy; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


def default_max_streams(npu_cores: int, cpu_cores: int | None = None) -> int:
    """Two per NPU core when the NPU decodes, else two per CPU core."""
    cores = npu_cores if npu_cores > 0 else (cpu_cores if cpu_cores is not None else (os.cpu_count() or 1))
    return STREAMS_PER_CORE * max(1, cores)


@dataclass
class AdmissionCounters:
    admitted: int = 0
    rejected: int = 0


@dataclass
class Admission:
    max_streams: int
    queue_s: float
    counters: AdmissionCounters = field(default_factory=AdmissionCounters)
    _active: int = field(default=0, init=False)
    _waiting: deque[asyncio.Future[None]] = field(default_factory=deque, init=False)

    def __post_init__(self) -> None:
        if self.max_streams < 1:
            raise ValueError("max_streams must be at least 1")

    @property
    def active(self) -> int:
        return self._active

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Holds one stream for the body of the `async with`; raises Busy after `queue_s` without one."""
        await self._acquire()
        try:
            yield
        finally:
            self._release()

    async def _acquire(self) -> None:
        if self._active < self.max_streams and not self._waiting:
            self._active += 1
            self.counters.admitted += 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            await asyncio.wait_for(asyncio.shield(turn), self.queue_s)
        except TimeoutError:
            if not turn.done():
                self._waiting.remove(turn)
                self.counters.rejected += 1
                raise Busy(self._retry_after(), self.max_streams) from None
            # The slot was handed over just as the wait ran out: keep it.
        except asyncio.CancelledError:
            if turn.done():
                self._release()  # handed over, but the client left: pass it on
            else:
                self._waiting.remove(turn)
            raise
        self.counters.admitted += 1  # `_release` handed its slot to us: _active already counts it

    def _release(self) -> None:
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._active -= 1

    def _retry_after(self) -> int:
        return max(1, math.ceil(self.queue_s))
