"""The interface every decoder backend implements."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

import numpy as np

Feeds = dict[str, np.ndarray]
"""A stage's inputs by name: framed ones [1, C, W], per-utterance ones (a speaker embedding) whole."""
RunWindow = Callable[[Feeds], np.ndarray]
"""Runs one window of a stage: its feeds to the stage's single output [1, C', W * upsample]."""


def tile_to_shapes(feeds: Feeds, names: tuple[str, ...], shapes: Mapping[str, tuple[int, ...]]) -> list[np.ndarray]:
    """The inputs in `names` order as float32 at the compiled `shapes`: a per-utterance input ([1, C, 1], a speaker
    embedding) is repeated along the window when its compiled shape is [1, C, window]. NPU stages are compiled that
    way because rknn-toolkit2 2.5.0 never finishes optimising a decoder that broadcasts a length-1 input."""
    inputs = []
    for name in names:
        tensor = np.asarray(feeds[name], dtype=np.float32)
        expected = shapes.get(name)
        if expected is not None and tensor.shape[-1] == 1 and expected[-1] > 1:
            tensor = np.broadcast_to(tensor, (*tensor.shape[:-1], expected[-1]))
        inputs.append(np.ascontiguousarray(tensor))
    return inputs


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
