"""One request's synthesis on one voice, made by `LoadedVoice.start_request`: the window layout, the CPU
fallback switch, and the noise of each sentence. The engine only schedules its jobs.

Noise: each sentence draws from a generator seeded by the request's seed and the sentence's own phoneme ids,
and its windows are laid out from its length alone, so the same seed and sentence give the same samples
wherever the sentence stands in a text, and however its jobs were scheduled.

Threading: `encode` and `decode` are blocking and run on the inference workers; `decode` runs for several
windows of one sentence at once (it only reads the plan). The fallback switch is one flag, set once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .fallback import RequestFallback
from .windowing import FrameSource, Window, run_window

if TYPE_CHECKING:
    from .voice_runtime import LoadedVoice, SynthesisParams


@dataclass(frozen=True)
class SentencePlan:
    """One sentence encoded (its decoder input computed) and its decoder windows laid out."""

    source: FrameSource
    """The decoder's framed input, computed whole (windows read it from several threads)."""
    constants: dict[str, np.ndarray]
    """The decoder's per-utterance inputs (a speaker embedding)."""
    windows: tuple[Window, ...]
    samples_per_frame: int
    durations: np.ndarray
    """Frames per phoneme id (the duration predictor's); their sum is the sentence's length in frames."""
    frames: int

    def window_samples(self, window: Window) -> int:
        return (window.emit_end - window.emit_start) * self.samples_per_frame


class VoiceRequest:
    def __init__(self, voice: LoadedVoice, params: SynthesisParams, seed: int) -> None:
        self.voice = voice
        self.params = params
        self.seed = seed
        self.fallback = RequestFallback(voice.fallback_counters)
        self._run_decoder, self._run_flow = voice.stage_runners(self.fallback)
        self._policy = voice.decoder_policy()

    @property
    def sample_rate(self) -> int:
        return self.voice.config.sample_rate

    def sentence_rng(self, phoneme_ids: list[int]) -> np.random.Generator:
        """The sentence's own noise: from the request's seed and the sentence's phoneme ids only."""
        digest = hashlib.blake2b(np.asarray(phoneme_ids, dtype="<i8").tobytes(), digest_size=16).digest()
        words = np.frombuffer(digest, dtype="<u4").tolist()
        return np.random.default_rng([self.seed & 0xFFFFFFFF, self.seed >> 32, *words])

    def encode(self, phoneme_ids: list[int]) -> SentencePlan:
        """The text encoder, durations and flow for one sentence (blocking)."""
        latent = self.voice.encode(phoneme_ids, self.params, self.sentence_rng(phoneme_ids))
        decoder_input = self.voice.decoder_input(latent, self._run_flow)
        decoder_inputs = self.voice.split.decoder.inputs
        constants = {n: t for n, t in decoder_input.constants.items() if n in decoder_inputs}
        return SentencePlan(decoder_input.source, constants, tuple(self._policy.windows(latent.frames)),
                            self.voice.samples_per_frame, latent.durations, latent.frames)

    def durations(self, phoneme_ids: list[int]) -> tuple[np.ndarray, int]:
        """Frames per phoneme id and the sentence's length in frames, exactly as `encode` gives them, from the
        prelude alone (blocking; no flow, no decoder): for word timings without audio."""
        durations = self.voice.durations(phoneme_ids, self.params, self.sentence_rng(phoneme_ids))
        return durations, max(1, int(durations.sum()))  # VITS: y_lengths = clamp_min(sum(w_ceil), 1)

    def decode(self, plan: SentencePlan, window: Window) -> np.ndarray:
        """One decoder window's audio: mono float32 (blocking)."""
        audio = run_window(plan.source, window, self._run_decoder, plan.constants, plan.samples_per_frame)
        return audio.reshape(-1).astype(np.float32, copy=False)

    def sentence_audio(self, phoneme_ids: list[int]) -> np.ndarray:
        """A whole sentence, its windows one after another (blocking): warm-up, tools and tests."""
        plan = self.encode(phoneme_ids)
        return np.concatenate([self.decode(plan, window) for window in plan.windows])
