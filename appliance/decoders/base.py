"""The interface every decoder backend implements."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

Feeds = dict[str, np.ndarray]
"""A stage's inputs by name: framed ones [1, C, W], per-utterance ones (a speaker embedding) whole."""
RunWindow = Callable[[Feeds], np.ndarray]
"""Runs one window of a stage: its feeds to the stage's single output [1, C', W * upsample]."""


class StageBackend(Protocol):
    name: str
    """Shown in /healthz and logs, e.g. 'cpu' or 'npu'."""
    fixed_window: int | None
    """Total frames (context included) of the one input shape the backend accepts; None for any size."""
    context: int | None
    """Context frames each side the compiled model was verified with; None: the stage's default."""

    def run(self, feeds: Feeds) -> np.ndarray:
        """Runs one window: framed inputs [1, C, W] (zero-padded to `fixed_window` if set) plus per-utterance
        inputs; returns the stage's single output [1, C', W * upsample]. Blocking: called on a worker."""
        ...
