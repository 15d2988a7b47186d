"""Never silence: a request whose NPU window fails is decoded on the CPU from that window on.

The CPU runs the very same zero-padded windows the NPU would have, so the audio continues without a gap or a
repeated piece, and equals what the CPU alone would have made from the same seed, sample for sample."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import numpy as np

from ..decoders.base import Feeds, RunWindow, StageBackend
from ..health import FallbackHealth

log = logging.getLogger(__name__)


@dataclass
class FallbackCounters:
    """Shared by the requests of one voice, updated from the inference workers."""

    npu_windows: int = 0
    cpu_fallback_windows: int = 0
    npu_failures: int = 0
    requests_fallen_back: int = 0
    last_error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def npu_window(self) -> None:
        with self._lock:
            self.npu_windows += 1

    def cpu_window(self) -> None:
        with self._lock:
            self.cpu_fallback_windows += 1

    def npu_failed(self, error: Exception, request_falls_back: bool) -> None:
        """An NPU window failed; `request_falls_back`: its request's first failure (it goes to the CPU from
        here on; windows of the request running beside it may fail too)."""
        with self._lock:
            self.npu_failures += 1
            self.requests_fallen_back += request_falls_back
            self.last_error = str(error)

    def health(self) -> FallbackHealth:
        """A consistent copy, safe to take on the event loop while workers count."""
        with self._lock:
            return FallbackHealth(self.npu_windows, self.cpu_fallback_windows, self.npu_failures,
                                  self.requests_fallen_back, self.last_error)


@dataclass
class RequestFallback:
    """One request's switch: once any of its NPU windows fails, all its remaining windows run on the CPU.
    Its windows run on several workers at once, so the switch is flipped under a lock."""

    counters: FallbackCounters
    fallen_back: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def runner(self, primary: StageBackend, fallback: StageBackend) -> RunWindow:
        def run(feeds: Feeds) -> np.ndarray:
            if not self.fallen_back:
                try:
                    output = primary.run(feeds)
                except Exception as e:  # whatever the NPU raised, the CPU can still answer
                    with self._lock:
                        first, self.fallen_back = not self.fallen_back, True
                    self.counters.npu_failed(e, first)
                    if first:
                        log.warning("NPU window failed (%s); this request continues on the CPU", e)
                else:
                    self.counters.npu_window()
                    return output
            self.counters.cpu_window()
            return fallback.run(feeds)

        return run
