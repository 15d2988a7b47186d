"""The CPU backend: onnxruntime, any window size (or one fixed size, as an NPU model has)."""

from __future__ import annotations

import numpy as np

from ..model.onnx_stage import OnnxStage, OrtSettings
from ..model.piper_split import StageGraph
from .base import Feeds


class CpuStageBackend:
    name = "cpu"

    def __init__(self, graph: StageGraph, settings: OrtSettings, fixed_window: int | None = None,
                 context: int | None = None) -> None:
        """`fixed_window`/`context`: decode exactly the windows an NPU model would (same sizes, same zero
        padding), e.g. to fall back for it sample for sample or to measure it against the CPU."""
        self._stage = OnnxStage(graph, settings)
        self.fixed_window = fixed_window
        self.context = context
        self._output = graph.outputs[0]

    def run(self, feeds: Feeds) -> np.ndarray:
        return self._stage.run(feeds)[self._output]
