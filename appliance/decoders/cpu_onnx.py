"""The CPU backend: onnxruntime, any window size."""

from __future__ import annotations

import numpy as np

from ..model.onnx_stage import OnnxStage, OrtSettings
from ..model.piper_split import StageGraph
from ..synthesis.windowing import Feeds


class CpuStageBackend:
    name = "cpu"
    fixed_window: int | None = None
    context: int | None = None

    def __init__(self, graph: StageGraph, settings: OrtSettings) -> None:
        self._stage = OnnxStage(graph, settings)
        self._output = graph.outputs[0]

    def run(self, feeds: Feeds) -> np.ndarray:
        return self._stage.run(feeds)[self._output]
