"""A double of rknn-toolkit-lite2's `RKNNLite`, for a machine without an RK3588 NPU.

It honours the real API and its constraints: `load_rknn` before `init_runtime` before `inference`, return
codes (0 / -1) and `None` from a failed inference as the runtime gives them, core masks as RKNNLite defines
them, inputs refused unless their count, shape and dtype are exactly the compiled model's (the runtime logs
an error and returns None). It computes with the stage's ONNX model on onnxruntime at the fixed window, and
can be told to fail or to hang, per core, or to refuse `init_runtime` on a core. The board keeps every
runtime handed out, so that tests can check that each one that was initialised has been released.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from appliance.model.onnx_stage import OnnxStage, OrtSettings
from appliance.model.piper_split import StageGraph

NPU_CORE_AUTO = 0
NPU_CORE_0 = 1
NPU_CORE_1 = 2
NPU_CORE_2 = 4
NPU_CORE_0_1 = 3
NPU_CORE_0_1_2 = 7
VALID_MASKS = {NPU_CORE_AUTO, NPU_CORE_0, NPU_CORE_1, NPU_CORE_2, NPU_CORE_0_1, NPU_CORE_0_1_2}


@dataclass
class CompiledModel:
    graph: StageGraph
    window: int
    shapes: Mapping[str, tuple[int, ...]]
    """Each input's compiled shape: [1, C, window], a speaker embedding included (`conversion` compiles it at the
    window's length; bundles made before that have it at [1, C, 1])."""


@dataclass
class FakeBoard:
    """The NPU as the doubles see it: compiled models by file, faults to inject, what ran where."""

    models: dict[str, CompiledModel] = field(default_factory=dict)
    fail_cores: set[int] = field(default_factory=set)
    fail_init_cores: set[int] = field(default_factory=set)
    """`init_runtime` on these cores returns -1, as when the driver cannot open a context there."""
    raise_init_cores: set[int] = field(default_factory=set)
    """`init_runtime` on these cores raises, as the real binding does when librknnrt fails inside the call."""
    hang_cores: set[int] = field(default_factory=set)
    fail_after_windows: int | None = None
    """Every core fails once this many windows have run in total."""
    windows_by_core: dict[int, int] = field(default_factory=dict)
    timeline: list[tuple[str, int, float, float]] = field(default_factory=list)
    """Every inference that answered: (model file name, core, monotonic start, monotonic end)."""
    errors: list[str] = field(default_factory=list)
    runtimes: list[FakeRKNNLite] = field(default_factory=list)
    """Every runtime handed out, in order."""
    release_hangs: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def runtime(self) -> FakeRKNNLite:
        runtime = FakeRKNNLite(board=self)
        with self._lock:
            self.runtimes.append(runtime)
        return runtime

    def initialised_runtimes(self) -> list[FakeRKNNLite]:
        """Runtimes whose `init_runtime` succeeded (released since or not)."""
        return [r for r in self.runtimes if r.initialised_core is not None]

    def unreleased_runtimes(self) -> list[FakeRKNNLite]:
        """Runtimes holding a loaded model or a context that nobody has released."""
        return [r for r in self.runtimes if r.loaded and not r.released]

    def total_windows(self) -> int:
        return sum(self.windows_by_core.values())


class FakeRKNNLite:
    NPU_CORE_AUTO = NPU_CORE_AUTO
    NPU_CORE_0 = NPU_CORE_0
    NPU_CORE_1 = NPU_CORE_1
    NPU_CORE_2 = NPU_CORE_2
    NPU_CORE_0_1 = NPU_CORE_0_1
    NPU_CORE_0_1_2 = NPU_CORE_0_1_2

    def __init__(self, verbose: bool = False, verbose_file: str | None = None, *, board: FakeBoard) -> None:
        self._board = board
        self._model: CompiledModel | None = None
        self._stage: OnnxStage | None = None
        self._core: int | None = None
        # What the double records for tests (not part of the RKNNLite API):
        self.loaded = False
        self.initialised_core: int | None = None
        self.released = False

    def load_rknn(self, path: str) -> int:
        model = self._board.models.get(str(Path(path)))
        if model is None or not Path(path).exists():
            self._board.errors.append(f"load_rknn: {path} is not a valid rknn model")
            return -1
        self._model = model
        self.loaded = True
        return 0

    def init_runtime(self, target: str | None = None, device_id: str | None = None, async_mode: bool = False,
                     core_mask: int = NPU_CORE_AUTO) -> int:
        if self._model is None:
            self._board.errors.append("init_runtime: load_rknn first")
            return -1
        if core_mask not in VALID_MASKS:
            self._board.errors.append(f"init_runtime: invalid core_mask {core_mask}")
            return -1
        core = {NPU_CORE_0: 0, NPU_CORE_1: 1, NPU_CORE_2: 2}.get(core_mask, 0)
        if core in self._board.fail_init_cores:
            self._board.errors.append(f"init_runtime: cannot open a context on core {core} (injected)")
            return -1
        if core in self._board.raise_init_cores:
            raise RuntimeError(f"Init runtime environment failed on core {core} (injected)")
        self._core = core
        self._stage = OnnxStage(self._model.graph, OrtSettings(intra_op_threads=1))
        self.initialised_core = core
        return 0

    def inference(self, inputs: list[np.ndarray] | None = None, data_format: object = None,
                  inputs_pass_through: object = None, get_frame_id: bool = False) -> list[np.ndarray] | None:
        if self._stage is None or self._model is None or self._core is None:
            self._board.errors.append("inference: init_runtime first")
            return None
        model = self._model
        names = model.graph.inputs
        if inputs is None or len(inputs) != len(names):
            self._board.errors.append(f"inference: expected {len(names)} inputs, got {len(inputs or [])}")
            return None
        for name, array in zip(names, inputs, strict=True):
            expected = tuple(model.shapes[name])
            if not isinstance(array, np.ndarray) or array.shape != expected or array.dtype != np.float32:
                got = (getattr(array, "shape", None), getattr(array, "dtype", None))
                self._board.errors.append(f"inference: input {name} must be float32 {expected}, got {got}")
                return None
        core = self._core
        with self._board._lock:
            done = self._board.total_windows()
            failing = core in self._board.fail_cores or (
                self._board.fail_after_windows is not None and done >= self._board.fail_after_windows)
            hanging = core in self._board.hang_cores
        if hanging:
            self._board.release_hangs.wait(timeout=30)
            return None
        if failing:
            raise RuntimeError(f"rknn_run failed on core {core} (injected)")
        started = time.monotonic()
        # The ONNX stage takes a speaker embedding as [1, C, 1]; compiled at the window's length, its columns are
        # equal (the graph broadcasts it), so the first one is the same input.
        feeds = {name: array if name in model.graph.framed_inputs else array[..., :1]
                 for name, array in zip(names, inputs, strict=True)}
        output = self._stage.run(feeds)[model.graph.outputs[0]]
        with self._board._lock:
            self._board.windows_by_core[core] = self._board.windows_by_core.get(core, 0) + 1
            self._board.timeline.append((model.graph.name, core, started, time.monotonic()))
        return [output]

    def release(self) -> None:
        self._stage = None
        self._model = None
        self._core = None
        self.released = True
