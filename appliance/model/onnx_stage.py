"""One model stage on onnxruntime's CPU provider."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from .piper_split import StageGraph


@dataclass(frozen=True)
class OrtSettings:
    intra_op_threads: int = 1
    """Threads inside one run. Requests run in parallel on the inference workers instead."""


class OnnxStage:
    def __init__(self, graph: StageGraph, settings: OrtSettings) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.intra_op_threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.graph = graph
        self._session = ort.InferenceSession(
            graph.model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._session.run(list(self.graph.outputs), {n: feeds[n] for n in self.graph.inputs})
        return dict(zip(self.graph.outputs, outputs, strict=True))
