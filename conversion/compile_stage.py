"""Compile one model stage with rknn-toolkit2 at a fixed window, and run it in the toolkit's simulator.

The simulator only runs a model built in the same session, so a `CompiledStage` keeps its RKNN object open:
it is the backend the verification decodes with, window by window, exactly as the board will.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from appliance.decoders.base import Feeds, tile_to_shapes
from appliance.model.piper_split import StageGraph

from .toolkit_log import LogVerdict, captured_fds, read_verdict


class BuildError(RuntimeError):
    """The toolkit refused the model or logged errors while building it."""


def input_shapes(graph: StageGraph, window: int) -> dict[str, list[int]]:
    """[1, C, window] for every input. A per-utterance input (a speaker embedding, [1, C, 1] in the graph) is compiled
    at the window's length too and repeated along it when fed (`tile_to_shapes`): with a length-1 input that the
    graph broadcasts, the toolkit's optimiser loops forever on a multi-speaker decoder (OpFusing never ends)."""
    return {value.name: [1, value.type.tensor_type.shape.dim[1].dim_value, window]
            for value in graph.model.graph.input}


@dataclass
class SimulatedStage:
    """A stage compiled for the NPU and running in the simulator: a decoder backend for verification."""

    graph: StageGraph
    window: int
    context: int
    rknn: Any
    log_verdict: LogVerdict
    log_path: Path
    name: str = "npu-simulator"
    fixed_window: int | None = field(init=False)
    shapes: dict[str, tuple[int, ...]] = field(init=False)

    def __post_init__(self) -> None:
        self.fixed_window = self.window
        self.shapes = {name: tuple(shape) for name, shape in input_shapes(self.graph, self.window).items()}

    def run(self, feeds: Feeds) -> np.ndarray:
        inputs = tile_to_shapes(feeds, self.graph.inputs, self.shapes)
        with captured_fds(self.log_path):
            outputs = self.rknn.inference(inputs=inputs, data_format="nchw")
        if not outputs:
            raise BuildError(f"the simulator returned no output for {self.graph.name}")
        return np.asarray(outputs[0], dtype=np.float32)

    def export(self, path: Path) -> None:
        with captured_fds(self.log_path):
            if self.rknn.export_rknn(str(path)) != 0:
                raise BuildError(f"export_rknn({path}) failed; see {self.log_path}")

    def release(self) -> None:
        self.rknn.release()


def compile_stage(graph: StageGraph, window: int, context: int, target: str, log_path: Path) -> SimulatedStage:
    """Builds fp16 (no quantisation) for `target`; raises BuildError if the toolkit fails or logs errors."""
    from rknn.api import RKNN  # imported here: only conversion hosts have the toolkit

    shapes = input_shapes(graph, window)
    start = log_path.stat().st_size if log_path.exists() else 0
    with tempfile.TemporaryDirectory(prefix=f"rknn-{graph.name}-") as folder:
        onnx_path = Path(folder) / f"{graph.name}.onnx"
        onnx.save(graph.model, str(onnx_path))
        rknn = RKNN(verbose=False)
        with captured_fds(log_path):
            try:
                rknn.config(target_platform=target, float_dtype="float16", optimization_level=3)
                if rknn.load_onnx(model=str(onnx_path), inputs=list(graph.inputs),
                                  input_size_list=[shapes[n] for n in graph.inputs]) != 0:
                    raise BuildError(f"load_onnx failed for {graph.name}")
                if rknn.build(do_quantization=False) != 0:
                    raise BuildError(f"build failed for {graph.name} at {window} frames")
                if rknn.init_runtime() != 0:  # no target: the simulator
                    raise BuildError(f"the simulator would not start for {graph.name}")
            except ValueError as e:  # the toolkit raises for arguments it refuses
                rknn.release()
                raise BuildError(f"{graph.name}: {e}") from e
            except BuildError:
                rknn.release()
                raise
    verdict = read_verdict(log_path, start)
    if not verdict.clean:
        rknn.release()
        raise BuildError(f"{graph.name} at {window} frames: the toolkit logged {verdict.errors} error(s) "
                         f"({verdict.regtask_errors} REGTASK), e.g. {verdict.first_errors[0]!r}")
    return SimulatedStage(graph, window, context, rknn, verdict, log_path)
