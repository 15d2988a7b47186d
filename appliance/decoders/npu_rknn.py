"""The NPU backend: a compiled stage (`.rknn`) on rknn-toolkit-lite2, one runtime context per NPU core.

Windows of concurrent requests go to whichever core is free. A core whose inference fails or overruns its
deadline is taken out of service for a while; the caller (the fallback layer) decodes that window on the CPU.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..health import NpuCoreHealth, NpuStageHealth
from ..voices.bundle_manifest import CompiledStage
from .base import Feeds, tile_to_shapes

log = logging.getLogger(__name__)

# rknnlite.api.RKNNLite's core masks (one bit per core), so that code and tests need not import rknnlite.
NPU_CORE_MASKS = {0: 1, 1: 2, 2: 4}


class RknnLiteRuntime(Protocol):
    """The part of `rknnlite.api.RKNNLite` the appliance uses; return codes as the real API gives them."""

    def load_rknn(self, path: str) -> int: ...

    def init_runtime(self, core_mask: int = ...) -> int: ...

    def inference(self, inputs: list[np.ndarray], data_format: Any = None) -> list[np.ndarray] | None: ...

    def release(self) -> None: ...


RuntimeFactory = Callable[[], RknnLiteRuntime]


class NpuError(RuntimeError):
    """An NPU window failed (error, refusal or deadline); decode it elsewhere."""


@dataclass
class NpuCore:
    index: int
    runtime: RknnLiteRuntime
    resting_until: float = 0.0
    """Out of service until then (monotonic seconds) after a failure."""
    busy_with_hung_call: bool = False
    failures: int = 0
    windows: int = 0
    _thread_lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class NpuTiming:
    deadline_s: float = 2.0
    """A window taking longer is abandoned to the CPU and its core rested."""
    rest_s: float = 60.0
    """How long a failed core rests before it is tried again."""


class NpuStageBackend:
    name = "npu"

    def __init__(
        self,
        model_path: Path,
        stage: CompiledStage,
        cores: Sequence[int],
        runtime_factory: RuntimeFactory,
        timing: NpuTiming | None = None,
    ) -> None:
        self.stage = stage
        self.fixed_window = stage.window
        self.context = stage.context
        self.timing = timing or NpuTiming()
        self.cores: list[NpuCore] = []
        # A failure on core N releases the runtimes already opened on cores 0..N-1 (and core N's own).
        with ExitStack() as opened:
            for index in cores:
                runtime = runtime_factory()
                opened.callback(runtime.release)
                # The binding reports most failures as -1 but raises for some: both mean "use the CPU".
                if _returned(partial(runtime.load_rknn, str(model_path))) != 0:
                    raise NpuError(f"load_rknn({model_path.name}) failed")
                if _returned(partial(runtime.init_runtime, core_mask=NPU_CORE_MASKS[index])) != 0:
                    raise NpuError(f"init_runtime on NPU core {index} failed")
                self.cores.append(NpuCore(index, runtime))
            if not self.cores:
                raise NpuError("no NPU core to run on")
            opened.pop_all()
        self._idle: queue.Queue[NpuCore] = queue.Queue()
        for core in self.cores:
            self._idle.put(core)
        self._lock = threading.Lock()

    def run(self, feeds: Feeds) -> np.ndarray:
        core = self._acquire()
        inputs = tile_to_shapes(feeds, self.stage.inputs, self.stage.input_shapes)
        done: Future[list[np.ndarray] | None] = Future()
        # The call runs on its own thread so that a hung driver call cannot hold the caller past the deadline.
        threading.Thread(target=_call, args=(core, inputs, done), name=f"npu{core.index}", daemon=True).start()
        try:
            outputs = done.result(timeout=self.timing.deadline_s)
        except FutureTimeout:
            self._rest(core, f"no answer within {self.timing.deadline_s:.1f} s", hung=True)
            done.add_done_callback(lambda _: self._release_after_hang(core))
            raise NpuError(f"NPU core {core.index} did not answer within {self.timing.deadline_s:.1f} s") from None
        except Exception as e:  # an exception from the runtime
            self._rest(core, repr(e))
            self._release(core)
            raise NpuError(f"NPU core {core.index} failed: {e}") from e
        if outputs is None or not outputs:
            self._rest(core, "inference returned no output")
            self._release(core)
            raise NpuError(f"NPU core {core.index} returned no output")
        core.windows += 1
        self._release(core)
        return np.asarray(outputs[0], dtype=np.float32)

    def close(self) -> None:
        for core in self.cores:
            if not core.busy_with_hung_call:
                core.runtime.release()

    def health(self) -> NpuStageHealth:
        """Each core's state, read under the pool's lock (workers change it)."""
        with self._lock:
            now = time.monotonic()
            cores = tuple(NpuCoreHealth(c.index, c.resting_until <= now and not c.busy_with_hung_call, c.windows,
                                        c.failures) for c in self.cores)
        return NpuStageHealth(self.fixed_window, cores)

    # -- core pool ------------------------------------------------------------------------------------

    def _acquire(self) -> NpuCore:
        """A free core in service; raises NpuError at once when every core is resting."""
        while True:
            with self._lock:
                now = time.monotonic()
                usable = [c for c in self.cores if c.resting_until <= now and not c.busy_with_hung_call]
            if not usable:
                raise NpuError("every NPU core is out of service")
            try:
                core = self._idle.get(timeout=self.timing.deadline_s)
            except queue.Empty:
                continue  # re-check: the busy cores may all have failed meanwhile
            if core.resting_until > time.monotonic():
                self._idle.put(core)  # still resting; it goes back in line
                time.sleep(0.001)
                continue
            return core

    def _release(self, core: NpuCore) -> None:
        self._idle.put(core)

    def _release_after_hang(self, core: NpuCore) -> None:
        with self._lock:
            core.busy_with_hung_call = False
        self._idle.put(core)

    def _rest(self, core: NpuCore, why: str, hung: bool = False) -> None:
        with self._lock:
            core.failures += 1
            core.resting_until = time.monotonic() + self.timing.rest_s
            core.busy_with_hung_call = hung
        log.warning("NPU core %d out of service for %.0f s: %s", core.index, self.timing.rest_s, why)


def _returned(call: Callable[[], int]) -> int | Exception:
    """The call's return code, or the exception it raised (logged), so that callers treat both as failures."""
    try:
        return call()
    except Exception as e:
        log.warning("rknn-toolkit-lite2 raised: %r", e)
        return e


def _call(core: NpuCore, inputs: list[np.ndarray], done: Future) -> None:
    try:
        with core._thread_lock:
            done.set_result(core.runtime.inference(inputs=inputs))
    except BaseException as e:
        done.set_exception(e)
