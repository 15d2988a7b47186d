"""Verification of a compiled chain: each sentence decoded in the toolkit's simulator, windowed exactly as the
board decodes it, against the original model in onnxruntime (whole utterance, fp32, no noise): SNR and MCD."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from appliance.decoders.base import StageBackend
from appliance.decoders.cpu_onnx import CpuStageBackend
from appliance.model.onnx_stage import OrtSettings
from appliance.model.piper_split import SplitVoice
from appliance.synthesis.voice_runtime import Latent, LoadedVoice, SynthesisParams
from appliance.synthesis.windowing import WindowedStage
from appliance.text.phoneme_ids import phonemes_to_ids
from appliance.text.phonemes import Phonemizer
from appliance.voices.bundle_manifest import VerifiedSentence
from appliance.voices.catalog import VoiceFiles

from .audio_metrics import mel_cepstral_distortion, snr_db

VERIFY_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please remember to water the plants on Tuesday, and lock the back door before you leave the house.",
    "Is it ready yet?",
    "Yes.",
    "Turn on the kitchen lights at seven thirty.",
    "The temperature outside is minus four degrees Celsius, with a light wind from the north-east.",
    "Okay.",
    "Your train to Edinburgh leaves from platform nine at a quarter past six, about twelve minutes late.",
    "Hello there!",
    "Timer done.",
    "According to the forecast, heavy rain will reach the coast overnight and clear by Thursday morning, so the "
    "garden party should go ahead as planned.",
    "Why did the washing machine stop halfway through the cycle?",
)
"""Short and long, statements and questions: one-word answers fit in one window, the long ones span many and
carry the windowing error as well as the fp16 error."""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Verification:
    sentences: tuple[VerifiedSentence, ...]
    stage_snr: dict[str, float]
    """Each simulated stage alone against onnxruntime on the same windows (first sentence)."""

    @property
    def worst_snr_db(self) -> float:
        return min(s.snr_db for s in self.sentences)

    @property
    def worst_mcd_db(self) -> float:
        return max(s.mcd_db for s in self.sentences)


def verify(files: VoiceFiles, split: SplitVoice, flow: StageBackend | None, decoder: StageBackend,
           sentences: tuple[str, ...], progress: Progress = print) -> Verification:
    """A voice with several speakers speaks the sentences in turn (sentence i by speaker i mod n), so every
    speaker embedding goes through the compiled stages."""
    settings = OrtSettings(intra_op_threads=2)
    npu = LoadedVoice(files, split, settings, decoder, flow=flow)
    original = ort.InferenceSession(str(files.onnx_path), providers=["CPUExecutionProvider"])
    phonemizer = Phonemizer()
    speakers = files.config.num_speakers
    checked: list[VerifiedSentence] = []
    stage_snr: dict[str, float] = {}
    for index, text in enumerate(sentences):
        speaker = index % speakers if speakers > 1 else None
        params = SynthesisParams(speaker, files.config.length_scale, 0.0, 0.0)
        ids = phonemes_to_ids(phonemizer.sentences(text, files.config.espeak_voice)[0], files.config.phoneme_id_map)
        latent = npu.encode(ids, params, np.random.default_rng(0))
        audio = drain(npu.audio_windows(latent))
        feeds = {"input": np.array([ids], dtype=np.int64), "input_lengths": np.array([len(ids)], dtype=np.int64),
                 "scales": np.array([0.0, params.length_scale, 0.0], dtype=np.float32)}
        if "sid" in split.model_inputs:
            feeds["sid"] = np.array([speaker or 0], dtype=np.int64)
        reference = original.run(None, feeds)[0].reshape(-1)
        result = VerifiedSentence(text=text, speaker_id=speaker, frames=latent.frames,
                                  snr_db=round(snr_db(reference, audio), 2),
                                  mcd_db=round(_mcd(reference, audio, files.config.sample_rate), 3))
        progress(f"      {result.snr_db:5.1f} dB  MCD {result.mcd_db:5.3f} dB  {latent.frames:4d} frames"
                 f"{'' if speaker is None else f'  speaker {speaker}'}  {text[:60]!r}")
        checked.append(result)
        if index == 0 and flow is not None:
            stage_snr = _stage_snrs(files, split, flow, decoder, latent)
    verification = Verification(tuple(checked), stage_snr)
    if flow is None:
        return Verification(verification.sentences, {"decoder": verification.worst_snr_db})
    return verification


def _mcd(reference: np.ndarray, audio: np.ndarray, sample_rate: int) -> float:
    if len(reference) != len(audio):
        return float("inf")
    return mel_cepstral_distortion(reference, audio, sample_rate)


def _stage_snrs(files: VoiceFiles, split: SplitVoice, flow: StageBackend, decoder: StageBackend,
                latent: Latent) -> dict[str, float]:
    settings = OrtSettings(intra_op_threads=2)
    cpu_flow = CpuStageBackend(split.flow, settings, flow.fixed_window, flow.context)
    cpu_decoder = CpuStageBackend(split.decoder, settings, decoder.fixed_window, decoder.context)
    snrs = {}
    for label, npu_flow, npu_decoder in (("flow", flow, cpu_decoder), ("decoder", cpu_flow, decoder)):
        mixed = LoadedVoice(files, split, settings, npu_decoder, flow=npu_flow)
        reference = LoadedVoice(files, split, settings, cpu_decoder, flow=cpu_flow)
        snrs[label] = snr_db(drain(reference.audio_windows(latent)), drain(mixed.audio_windows(latent)))
    return snrs


def drain(windows: WindowedStage) -> np.ndarray:
    parts = []
    while (step := windows.run_next()) is not None:
        parts.append(step[1].reshape(-1))
    return np.concatenate(parts)
