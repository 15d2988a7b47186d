"""The interface every decoder backend implements."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..synthesis.windowing import Feeds


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
