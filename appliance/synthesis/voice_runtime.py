"""A loaded voice: its stages on their backends, turning phoneme ids into a latent and a latent into
windows of audio. Blocking code, run on the inference workers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..config import FIRST_WINDOW_FRAMES, MAX_WINDOW_FRAMES
from ..decoders.base import RunWindow, StageBackend
from ..decoders.cpu_onnx import CpuStageBackend
from ..model.onnx_stage import OnnxStage, OrtSettings
from ..model.piper_split import SplitVoice
from ..voices.catalog import VoiceFiles
from ..voices.voice_config import VoiceConfig
from .fallback import FallbackCounters, RequestFallback
from .voice_request import VoiceRequest
from .windowing import ContextSource, FrameSource, SharedWindows, TensorSource, WindowedStage, WindowPolicy

DECODER_CONTEXT_FRAMES = 8
"""HiFi-GAN's receptive field makes 8 frames of context each side match whole decoding at ~60 dB."""
FLOW_CONTEXT_FRAMES = 16
"""The flow's WaveNet layers need 16 frames each side for ~70 dB."""


@dataclass(frozen=True)
class SynthesisParams:
    speaker_id: int | None
    length_scale: float
    noise_scale: float
    noise_w: float


@dataclass
class Latent:
    """One sentence, encoded, ready for windowed decoding."""

    source: FrameSource
    constants: dict[str, np.ndarray]
    frames: int
    durations: np.ndarray
    """Frames per phoneme id (int64), from the duration predictor; they add up to `frames`."""


@dataclass(frozen=True)
class WindowSettings:
    first_useful: int = FIRST_WINDOW_FRAMES
    max_useful: int = MAX_WINDOW_FRAMES


class LoadedVoice:
    def __init__(
        self,
        files: VoiceFiles,
        split: SplitVoice,
        ort_settings: OrtSettings,
        decoder: StageBackend,
        flow: StageBackend | None = None,
        windows: WindowSettings | None = None,
        cpu_fallback: bool = False,
    ) -> None:
        """`flow` set: the flow runs windowed on that backend (the NPU path); unset: on the CPU, for each decoder
        window's frames as it reads them.
        `cpu_fallback`: keep CPU copies of the windowed stages, for requests whose NPU windows fail."""
        self.name = files.name
        self.files = files
        self.config: VoiceConfig = files.config
        self.split = split
        self._prelude = [OnnxStage(g, ort_settings) for g in split.prelude]
        # Without a windowed flow backend the flow runs on the CPU for each decoder window's frames.
        self._cpu_flow = None if flow is not None else CpuStageBackend(split.flow, ort_settings)
        self.decoder = decoder
        self.flow = flow
        self.windows = windows or WindowSettings()
        # Inputs of the windowed stages that are not windowed (a speaker embedding): passed whole to each window.
        self._per_utterance_inputs = {
            name for stage in (split.flow, split.decoder) for name in stage.inputs if name not in stage.framed_inputs
        }
        self.fallback_counters = FallbackCounters()
        self.cpu_decoder: StageBackend | None = None
        self.cpu_flow: StageBackend | None = None
        if cpu_fallback:
            self.cpu_decoder = CpuStageBackend(split.decoder, ort_settings)
            self.cpu_flow = CpuStageBackend(split.flow, ort_settings) if flow is not None else None
        self.samples_per_frame = self._measure_upsampling()

    def close(self) -> None:
        for backend in (self.decoder, self.flow):
            close = getattr(backend, "close", None)
            if close is not None:
                close()

    def start_request(self, params: SynthesisParams, seed: int) -> VoiceRequest:
        """The object that synthesises one request on this voice (window layout, fallback, noise)."""
        return VoiceRequest(self, params, seed)

    # -- encoding -------------------------------------------------------------------------------------

    def encode(self, phoneme_ids: list[int], params: SynthesisParams, rng: np.random.Generator) -> Latent:
        tensors = self._run_prelude(phoneme_ids, params, rng)
        framed = {n: tensors[n] for n in self.split.flow.framed_inputs}
        constants = {n: tensors[n] for n in self._per_utterance_inputs if n in tensors}
        source = TensorSource(framed)
        return Latent(source, constants, source.total_frames, _frames(tensors[self.split.durations]))

    def durations(self, phoneme_ids: list[int], params: SynthesisParams, rng: np.random.Generator) -> np.ndarray:
        """Frames per phoneme id, as `encode` with the same generator state gives them, running only the
        prelude stages up to the duration predictor (no flow, no decoder)."""
        tensors = self._run_prelude(phoneme_ids, params, rng, until=self.split.durations)
        return _frames(tensors[self.split.durations])

    def _run_prelude(self, phoneme_ids: list[int], params: SynthesisParams, rng: np.random.Generator,
                     until: str | None = None) -> dict[str, np.ndarray]:
        """The prelude's tensors; with `until`, it stops at the stage that gives that tensor. The noise is
        drawn stage by stage in the same order either way, so what is computed is the same."""
        tensors: dict[str, np.ndarray] = {
            "input": np.array([phoneme_ids], dtype=np.int64),
            "input_lengths": np.array([len(phoneme_ids)], dtype=np.int64),
            "scales": np.array([params.noise_scale, params.length_scale, params.noise_w], dtype=np.float32),
        }
        if "sid" in self.split.model_inputs:
            tensors["sid"] = np.array([params.speaker_id or 0], dtype=np.int64)
        noises = {n.input_name: n.template for n in self.split.noises}
        for stage in self._prelude:
            for name in stage.graph.inputs:
                if name in noises:  # drawn only now: its shape comes from the stage before
                    tensors[name] = rng.standard_normal(tensors[noises[name]].shape, dtype=np.float32)
            tensors.update(stage.run(tensors))
            if until in tensors:
                break
        return tensors

    # -- decoding -------------------------------------------------------------------------------------

    def decoder_policy(self) -> WindowPolicy:
        return WindowPolicy(self.decoder.context or DECODER_CONTEXT_FRAMES, self.decoder.fixed_window,
                            self.windows.first_useful, self.windows.max_useful)

    def flow_policy(self) -> WindowPolicy:
        if self.flow is None:
            return WindowPolicy(FLOW_CONTEXT_FRAMES, None, self.windows.max_useful, self.windows.max_useful)
        return WindowPolicy(self.flow.context or FLOW_CONTEXT_FRAMES, self.flow.fixed_window,
                            self.windows.max_useful, self.windows.max_useful)

    def stage_runners(self, fallback: RequestFallback | None = None) -> tuple[RunWindow, RunWindow | None]:
        """How a request runs a decoder window and a flow window (None: the CPU flow runs inside each decoder window).
        With `fallback`, a failing NPU window and the rest of the request go to the CPU."""
        run_decoder: RunWindow = self.decoder.run
        run_flow: RunWindow | None = self.flow.run if self.flow else None
        if fallback is not None and self.cpu_decoder is not None:
            run_decoder = fallback.runner(self.decoder, self.cpu_decoder)
            if self.flow is not None and self.cpu_flow is not None:
                run_flow = fallback.runner(self.flow, self.cpu_flow)
        return run_decoder, run_flow

    def decoder_input(self, latent: Latent, run_flow: RunWindow | None) -> Latent:
        """The decoder's input for a sentence: the CPU flow run for each decoder window as it reads its frames
        (`run_flow` None), or the flow's fixed windows (NPU), each run when a decoder window first reads it."""
        decoder_constants = _only(latent.constants, self.split.decoder.inputs)
        if run_flow is None:
            assert self._cpu_flow is not None, "a voice with a windowed flow backend gets its runner"
            flow_constants = _only(latent.constants, self.split.flow.inputs)
            source = ContextSource(latent.source, self.split.flow.outputs[0], self._cpu_flow.run, flow_constants,
                                   FLOW_CONTEXT_FRAMES)
            return Latent(source, decoder_constants, latent.frames, latent.durations)
        flow_windows = list(self.flow_policy().windows(latent.frames))
        source = SharedWindows(latent.source, self.split.flow.outputs[0], flow_windows, run_flow,
                               _only(latent.constants, self.split.flow.inputs))
        return Latent(source, decoder_constants, latent.frames, latent.durations)

    def audio_windows(self, latent: Latent, policy: WindowPolicy | None = None) -> WindowedStage:
        """The decoder over one encoded sentence, window by window, in order (each `run_next()` yields audio
        [1, 1, n]): for tools and tests; requests decode through `VoiceRequest`."""
        run_decoder, run_flow = self.stage_runners()
        decoder_input = self.decoder_input(latent, run_flow)
        windows = (policy or self.decoder_policy()).windows(latent.frames)
        return WindowedStage(decoder_input.source, windows, run_decoder,
                             _only(decoder_input.constants, self.split.decoder.inputs),
                             upsample=self.samples_per_frame)

    def decode_whole(self, latent: Latent) -> np.ndarray:
        """One sentence's audio from one decoder run over all its frames (a CPU decoder, no fixed window): the
        reference that windowed decoding is measured against, in tests and tools."""
        _, run_flow = self.stage_runners()
        decoder_input = self.decoder_input(latent, run_flow)
        feeds = {**decoder_input.source.frames(0, latent.frames), **decoder_input.constants}
        return self.decoder.run(feeds).reshape(-1)

    def _measure_upsampling(self) -> int:
        """Audio samples per latent frame, read off the decoder itself (also warms it up)."""
        frames = 8 if self.decoder.fixed_window is None else self.decoder.fixed_window
        feeds = {}
        for name in self.split.decoder.inputs:
            channels = _static_channels(self.split.decoder, name)
            length = frames if name in self.split.decoder.framed_inputs else 1
            feeds[name] = np.zeros((1, channels, length), dtype=np.float32)
        samples = self.decoder.run(feeds).shape[-1]
        return samples // frames


def _frames(durations: np.ndarray) -> np.ndarray:
    return np.rint(durations.reshape(-1)).astype(np.int64)


def _only(tensors: Mapping[str, np.ndarray], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {k: v for k, v in tensors.items() if k in names}


def _static_channels(graph, name: str) -> int:
    for value in graph.model.graph.input:
        if value.name == name:
            dim = value.type.tensor_type.shape.dim[1]
            if dim.HasField("dim_value"):
                return dim.dim_value
    raise ValueError(f"{graph.name} input {name} has no static channel count")
