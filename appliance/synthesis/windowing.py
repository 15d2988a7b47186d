"""Running a convolutional stage (flow, HiFi-GAN) over windows of the latent, with context frames on both
sides that are computed and then cropped, so the stitched output equals whole-utterance decoding.

Each window reads only its own input frames, so the windows of a sentence can run in parallel on several
workers. The layout of a sentence's windows depends on nothing but its length: the same sentence is decoded the
same way wherever it stands in a text, so it gives the same samples (what a phrase cache needs).

A stage's output can be the input of the next stage (flow -> decoder): `SharedWindows` (fixed windows, the
NPU flow) and `ContextSource` (the CPU flow) are `FrameSource`s that run just the flow the decoder window
reading them needs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np

from ..config import FIRST_WINDOW_FRAMES, MAX_WINDOW_FRAMES
from ..decoders.base import Feeds, RunWindow

GROWTH: Final = 4
"""Each free-size window this many times the last. With the windows of a sentence decoded in parallel, the
second (4x) is done before the first has played even on one core at a fifth of real time, and the ramp
costs ~10% over one whole-sentence run where doubling would cost ~17% (the benchmark paragraph)."""


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
    first_useful: int = FIRST_WINDOW_FRAMES
    """Free-size windows: useful frames of the first window, small so audio starts early..."""
    max_useful: int = MAX_WINDOW_FRAMES
    """...then growing up to this, so that context overhead stays small."""

    def __post_init__(self) -> None:
        if self.fixed_window is not None and self.fixed_window - 2 * self.context <= 0:
            raise ValueError(f"a window of {self.fixed_window} frames leaves no room beside 2x{self.context}")

    def windows(self, total: int) -> Iterator[Window]:
        """The windows covering `total` frames: a function of `total` alone."""
        c = self.context
        emit = 0
        useful = self.first_useful
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
                useful = min(self.max_useful, useful * GROWTH)
            emit = emit_end


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
    """One stage run window by window over a frame source, in order (tools and tests)."""

    def __init__(
        self,
        source: FrameSource,
        windows: Iterator[Window],
        run_window: RunWindow,
        constants: Mapping[str, np.ndarray] | None = None,
        upsample: int = 1,
    ) -> None:
        self.source = source
        self._windows = windows
        self._run_window = run_window
        self._constants = dict(constants or {})
        self._upsample = upsample

    def run_next(self) -> tuple[Window, np.ndarray] | None:
        """Runs the next window; returns it with its cropped output ([1, C', frames*upsample]), or None."""
        window = next(self._windows, None)
        if window is None:
            return None
        return window, run_window(self.source, window, self._run_window, self._constants, self._upsample)


class SharedWindows:
    """A stage in fixed windows (the NPU flow), each run once, when a reader first asks for its frames: the
    decoder windows of a sentence, running on several workers, each trigger just the flow windows they read,
    so the flow of one window overlaps the decoder of the window before. Thread-safe: a window asked for by
    two readers at once runs once; the second waits for it (and gets its exception, if it failed)."""

    def __init__(self, source: FrameSource, output_name: str, windows: Sequence[Window], run: RunWindow,
                 constants: Mapping[str, np.ndarray]) -> None:
        self.source = source
        self.output_name = output_name
        self.total_frames = source.total_frames
        self._windows = tuple(windows)
        self._run = run
        self._constants = dict(constants)
        self._outputs: list[Future[np.ndarray] | None] = [None] * len(self._windows)
        self._lock = threading.Lock()

    def frames(self, start: int, end: int) -> Feeds:
        pieces = []
        for index, window in enumerate(self._windows):
            if window.emit_end > start and window.emit_start < end:
                output = self._output(index)
                pieces.append(output[..., max(start, window.emit_start) - window.emit_start:
                                     min(end, window.emit_end) - window.emit_start])
        return {self.output_name: np.concatenate(pieces, axis=-1)}

    def _output(self, index: int) -> np.ndarray:
        with self._lock:
            output = self._outputs[index]
            runs_here = output is None
            if output is None:
                output = self._outputs[index] = Future()
        if runs_here:
            try:
                output.set_result(run_window(self.source, self._windows[index], self._run, self._constants))
            except BaseException as e:
                output.set_exception(e)
        return output.result()


@dataclass(frozen=True)
class ContextSource:
    """A stage computed only for the frames asked of it, with `context` frames each side (cropped): each
    decoder window runs the CPU flow over just its own input, so a sentence's first audio waits for the flow of
    its first window, not of the whole sentence. Stateless, so windows may read it from several threads."""

    source: FrameSource
    output_name: str
    run: RunWindow
    constants: Mapping[str, np.ndarray]
    context: int

    @property
    def total_frames(self) -> int:
        return self.source.total_frames

    def frames(self, start: int, end: int) -> Feeds:
        input_start, input_end = max(0, start - self.context), min(self.total_frames, end + self.context)
        window = Window(start, end, input_start, input_end, input_end - input_start)
        return {self.output_name: run_window(self.source, window, self.run, self.constants)}


def run_window(source: FrameSource, window: Window, run: RunWindow, constants: Mapping[str, np.ndarray],
               upsample: int = 1) -> np.ndarray:
    """One window of a stage: its input frames (zero-padded to the fixed size), run, then cropped to the frames
    it emits ([1, C', frames * upsample]). Reads `source` only, so windows may run on several threads at once
    when the source is computed already (a TensorSource)."""
    feeds = dict(constants)
    for name, tensor in source.frames(window.input_start, window.input_end).items():
        missing = window.fed_length - tensor.shape[-1]
        if missing:
            tensor = np.pad(tensor, [(0, 0)] * (tensor.ndim - 1) + [(0, missing)])
        feeds[name] = np.ascontiguousarray(tensor)
    output = run(feeds)
    offset = window.input_start
    return output[..., (window.emit_start - offset) * upsample : (window.emit_end - offset) * upsample]
