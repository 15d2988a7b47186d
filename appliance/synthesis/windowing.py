"""Running a convolutional stage (flow, HiFi-GAN) over windows of the latent, with context frames on both
sides that are computed and then cropped, so the stitched output equals whole-utterance decoding.

A stage's output can be the input of the next windowed stage (flow -> decoder): `WindowedStage` is itself
a `FrameSource` that runs just enough of its windows to serve the frames asked of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

Feeds = dict[str, np.ndarray]
RunWindow = Callable[[Feeds], np.ndarray]
"""Runs one window: inputs by name ([1, C, W] framed, others whole) to the stage's output [1, C', W*up]."""


@dataclass(frozen=True)
class Window:
    emit_start: int
    """First frame of the stage's output that this window contributes."""
    emit_end: int
    input_start: int
    """First input frame fed (emit_start minus the left context, or 0)."""
    input_end: int
    fed_length: int
    """Frames fed: input_end - input_start, or the fixed window size (zero-padded at the right)."""


@dataclass(frozen=True)
class WindowPolicy:
    context: int
    """Frames of context on each side, cropped after the run."""
    fixed_window: int | None = None
    """Total frames of every window (context included) for a model with one input shape, e.g. on the NPU."""
    first_useful: int = 16
    """Free-size windows: useful frames of the first window, small so audio starts early..."""
    max_useful: int = 256
    """...then doubling up to this, so that context overhead stays small and decoding stays ahead."""

    def __post_init__(self) -> None:
        if self.fixed_window is not None and self.fixed_window - 2 * self.context <= 0:
            raise ValueError(f"a window of {self.fixed_window} frames leaves no room beside 2x{self.context}")

    def windows(self, total: int, start_useful: int | None = None) -> Iterator[Window]:
        """The windows covering `total` frames. `start_useful` lets a later sentence of a request start at
        the size the previous one reached."""
        c = self.context
        emit = 0
        useful = start_useful or self.first_useful
        while emit < total:
            if self.fixed_window is not None:
                w = self.fixed_window
                # The utterance start needs no left context: the first window emits all but its right context.
                input_start = 0 if emit == 0 else emit - c
                emit_end = min(total, input_start + w - c)
                yield Window(emit, emit_end, input_start, min(total, input_start + w), w)
            else:
                emit_end = min(total, emit + useful)
                input_start = max(0, emit - c)
                input_end = min(total, emit_end + c)
                yield Window(emit, emit_end, input_start, input_end, input_end - input_start)
                useful = self.next_useful(useful)
            emit = emit_end

    def next_useful(self, useful: int) -> int:
        """The growth rule: each free-size window twice the last, up to `max_useful`."""
        return min(self.max_useful, useful * 2)


class FrameSource(Protocol):
    total_frames: int

    def frames(self, start: int, end: int) -> Feeds:
        """The framed tensors for frames [start, end), each [1, C, end - start]."""
        ...


@dataclass
class TensorSource:
    """Framed tensors computed whole (e.g. by the prelude)."""

    tensors: Mapping[str, np.ndarray]

    @property
    def total_frames(self) -> int:
        return next(iter(self.tensors.values())).shape[-1]

    def frames(self, start: int, end: int) -> Feeds:
        return {name: t[..., start:end] for name, t in self.tensors.items()}


class WindowedStage:
    """One stage run window by window over a frame source; also a frame source for the next stage."""

    def __init__(
        self,
        source: FrameSource,
        output_name: str,
        windows: Iterator[Window],
        run_window: RunWindow,
        constants: Mapping[str, np.ndarray] | None = None,
        upsample: int = 1,
    ) -> None:
        self.source = source
        self.output_name = output_name
        self.total_frames = source.total_frames
        self._windows = windows
        self._run_window = run_window
        self._constants = dict(constants or {})
        self._upsample = upsample
        self._produced: list[np.ndarray] = []
        self._produced_frames = 0

    def run_next(self) -> tuple[Window, np.ndarray] | None:
        """Runs the next window; returns it with its cropped output ([1, C', frames*upsample]), or None."""
        window = next(self._windows, None)
        if window is None:
            return None
        feeds = dict(self._constants)
        for name, tensor in self.source.frames(window.input_start, window.input_end).items():
            missing = window.fed_length - tensor.shape[-1]
            if missing:
                tensor = np.pad(tensor, [(0, 0)] * (tensor.ndim - 1) + [(0, missing)])
            feeds[name] = np.ascontiguousarray(tensor)
        output = self._run_window(feeds)
        up = self._upsample
        offset = window.input_start
        cropped = output[..., (window.emit_start - offset) * up : (window.emit_end - offset) * up]
        return window, cropped

    def frames(self, start: int, end: int) -> Feeds:
        while self._produced_frames < end:
            step = self.run_next()
            if step is None:
                break
            self._produced.append(step[1])
            self._produced_frames = step[0].emit_end
        if len(self._produced) > 1:
            self._produced = [np.concatenate(self._produced, axis=-1)]
        return {self.output_name: self._produced[0][..., start:end]}
