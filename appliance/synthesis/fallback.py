"""Never silence: a request whose NPU window fails is decoded on the CPU from that window on.

The CPU runs the very same zero-padded windows the NPU would have, so the audio continues without a gap or a
repeated piece, and equals what the CPU alone would have made from the same seed, sample for sample."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import numpy as np

from ..decoders.base import StageBackend
from .windowing import Feeds, RunWindow

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

    def npu_failed(self, error: Exception) -> None:
        """A request's first NPU failure: it goes to the CPU from here on."""
        with self._lock:
            self.npu_failures += 1
            self.requests_fallen_back += 1
            self.last_error = str(error)

    def as_dict(self) -> dict:
        with self._lock:
            return {"npu_windows": self.npu_windows, "cpu_fallback_windows": self.cpu_fallback_windows,
                    "npu_failures": self.npu_failures, "requests_fallen_back": self.requests_fallen_back,
                    "last_error": self.last_error}


@dataclass
class RequestFallback:
    """One request's switch: once any of its NPU windows fails, all its remaining windows run on the CPU."""

    counters: FallbackCounters
    fallen_back: bool = False

    def runner(self, primary: StageBackend, fallback: StageBackend) -> RunWindow:
        def run(feeds: Feeds) -> np.ndarray:
            if not self.fallen_back:
                try:
                    output = primary.run(feeds)
                except Exception as e:  # whatever the NPU raised, the CPU can still answer
                    self.counters.npu_failed(e)
                    self.fallen_back = True
                    log.warning("NPU window failed (%s); this request continues on the CPU", e)
                else:
                    self.counters.npu_window()
                    return output
            self.counters.cpu_window()
            return fallback.run(feeds)

        return run
