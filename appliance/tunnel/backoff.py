"""Exponential backoff with a cap, a little downward jitter (so a fleet restarted together spreads out),
and a reset once a connection has proved itself."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Final

INITIAL_DELAY_S: Final = 1.0
FACTOR: Final = 2.0
JITTER: Final = 0.2


@dataclass
class Backoff:
    max_s: float
    initial_s: float = INITIAL_DELAY_S
    factor: float = FACTOR
    jitter: float = JITTER
    _next_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.initial_s = min(self.initial_s, self.max_s)
        self._next_s = self.initial_s

    def next_delay(self) -> float:
        delay = self._next_s
        self._next_s = min(self.max_s, delay * self.factor)
        return delay * random.uniform(1.0 - self.jitter, 1.0)

    def reset(self) -> None:
        self._next_s = self.initial_s
