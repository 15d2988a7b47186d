"""Voices shaped unlike the bundled joe (several speakers, 16 kHz): small Piper voices built by Piper's own
training code (tests/voice_factory.py) go through the split, the windowed decoder and the engine."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from appliance.config import ApplianceConfig, ServiceConfig, VoicesConfig
from appliance.decoders.cpu_onnx import CpuStageBackend
from appliance.model.onnx_stage import OrtSettings
from appliance.synthesis.engine import SpeechEngine
from appliance.synthesis.loading import load_engine
from appliance.synthesis.request import RequestError, SynthesisRequest
from appliance.synthesis.voice_runtime import Latent, LoadedVoice, SynthesisParams
from tests.voice_factory import (
    MULTI_SPEAKER_VOICE,
    SAMPLE_RATE,
    SINGLE_SPEAKER_VOICE,
    SPEAKERS,
    small_voices_folder,  # noqa: F401  (fixture)
)

JOE = "en_US-joe-medium"
SENTENCE = "The quick brown fox jumps over the lazy dog, then it runs all the way home."


@pytest.fixture(scope="module")
def engine(small_voices_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpeechEngine]:  # noqa: F811
    config = ApplianceConfig(
        voices=VoicesConfig(folder=small_voices_folder),
        service=ServiceConfig(state_folder=tmp_path_factory.mktemp("state"), watchdog=False),
    )
    engine = load_engine(config)
    yield engine
    engine.close()


def _sentence_ids(engine: SpeechEngine, voice: LoadedVoice) -> list[int]:
    (ids,) = engine.sentence_ids(voice, SENTENCE)
    return ids


@pytest.fixture(scope="module")
def run_original() -> Callable[[Path, list[int], SynthesisParams], np.ndarray]:
    """Runs a voice's ONNX file as exported, unsplit, on onnxruntime (one session per file: ~3 s to make)."""
    session = functools.cache(lambda path: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))

    def run(onnx_path: Path, ids: list[int], params: SynthesisParams) -> np.ndarray:
        return _run_original(session(onnx_path), ids, params)

    return run


def _run_original(session: ort.InferenceSession, ids: list[int], params: SynthesisParams) -> np.ndarray:
    feeds = {
        "input": np.array([ids], dtype=np.int64),
        "input_lengths": np.array([len(ids)], dtype=np.int64),
        "scales": np.array([params.noise_scale, params.length_scale, params.noise_w], dtype=np.float32),
    }
    if params.speaker_id is not None:
        feeds["sid"] = np.array([params.speaker_id], dtype=np.int64)
    return session.run(["output"], feeds)[0].reshape(-1)


def _decode_windowed(voice: LoadedVoice, latent: Latent) -> tuple[np.ndarray, int]:
    windows = voice.audio_windows(latent)
    pieces = []
    while (step := windows.run_next()) is not None:
        pieces.append(step[1].reshape(-1))
    return np.concatenate(pieces), len(pieces)


def _snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    error = np.sum((reference.astype(np.float64) - other) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / error))


async def _synthesise(engine: SpeechEngine, **request) -> tuple[np.ndarray, set[int]]:
    prepared = engine.prepare(SynthesisRequest(SENTENCE, **request))
    chunks = [chunk async for chunk in engine.stream(prepared)]
    return np.concatenate([c.samples for c in chunks]), {c.sample_rate for c in chunks}


# -- the split ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("voice_name", "speaker_id"), [(MULTI_SPEAKER_VOICE, 0), (MULTI_SPEAKER_VOICE, 2), (SINGLE_SPEAKER_VOICE, None)]
)
def test_split_stages_give_the_original_models_audio(
    engine: SpeechEngine, run_original: Callable, voice_name: str, speaker_id: int | None
):
    voice = engine.voices[voice_name]
    ids = _sentence_ids(engine, voice)
    params = SynthesisParams(speaker_id, length_scale=1.0, noise_scale=0.0, noise_w=0.0)

    latent = voice.encode(ids, params, np.random.default_rng(0))
    audio = voice.decode_whole(latent)

    original = run_original(voice.files.onnx_path, ids, params)
    assert audio.shape == original.shape
    assert np.sqrt(np.mean(original**2)) > 0.01  # audible: the comparison below means something
    np.testing.assert_allclose(audio, original, rtol=0, atol=1e-4)


@pytest.mark.parametrize("voice_name", [MULTI_SPEAKER_VOICE, SINGLE_SPEAKER_VOICE])
def test_windowed_decoding_sounds_like_whole_decoding(engine: SpeechEngine, voice_name: str):
    voice = engine.voices[voice_name]
    params = SynthesisParams(voice.config.speaker_id("bob" if voice.config.num_speakers > 1 else None),
                             voice.config.length_scale, voice.config.noise_scale, voice.config.noise_w)
    latent = voice.encode(_sentence_ids(engine, voice), params, np.random.default_rng(3))

    whole = voice.decode_whole(latent)
    windowed, count = _decode_windowed(voice, latent)

    assert count >= 3
    assert windowed.shape == whole.shape
    assert _snr_db(whole, windowed) >= 50


@pytest.mark.parametrize("voice_name", [MULTI_SPEAKER_VOICE, SINGLE_SPEAKER_VOICE])
def test_windowed_flow_and_decoder_sound_like_whole_decoding(engine: SpeechEngine, voice_name: str):
    """The NPU path: the flow too runs window by window (here on the CPU backend)."""
    whole_flow = engine.voices[voice_name]
    split, ort_settings = whole_flow.split, OrtSettings()
    windowed_flow = LoadedVoice(whole_flow.files, split, ort_settings, CpuStageBackend(split.decoder, ort_settings),
                                flow=CpuStageBackend(split.flow, ort_settings), windows=whole_flow.windows)
    config = whole_flow.config
    params = SynthesisParams(config.speaker_id("carol" if config.num_speakers > 1 else None),
                             config.length_scale, config.noise_scale, config.noise_w)
    ids = _sentence_ids(engine, whole_flow)

    whole = whole_flow.decode_whole(whole_flow.encode(ids, params, np.random.default_rng(4)))
    windowed, count = _decode_windowed(windowed_flow, windowed_flow.encode(ids, params, np.random.default_rng(4)))

    assert count >= 3
    assert windowed.shape == whole.shape
    assert _snr_db(whole, windowed) >= 50


# -- the engine -----------------------------------------------------------------------------------------


def test_the_engine_lists_every_voice_with_its_speakers_and_sample_rate(engine: SpeechEngine):
    voices = {v["name"]: v for v in engine.describe_voices()}

    assert set(voices) == {JOE, MULTI_SPEAKER_VOICE, SINGLE_SPEAKER_VOICE}
    assert voices[JOE]["default"] and voices[JOE]["sample_rate"] == 22050
    assert voices[MULTI_SPEAKER_VOICE]["num_speakers"] == 3
    assert voices[MULTI_SPEAKER_VOICE]["speakers"] == list(SPEAKERS)
    assert voices[SINGLE_SPEAKER_VOICE]["num_speakers"] == 1
    assert voices[SINGLE_SPEAKER_VOICE]["speakers"] == []
    for name in (MULTI_SPEAKER_VOICE, SINGLE_SPEAKER_VOICE):
        assert voices[name]["sample_rate"] == SAMPLE_RATE
        assert voices[name]["language"] == "en_US"


async def test_a_speaker_named_or_numbered_is_the_same_voice(engine: SpeechEngine):
    bob, bob_rates = await _synthesise(engine, voice=MULTI_SPEAKER_VOICE, speaker="bob", seed=11)
    one, _ = await _synthesise(engine, voice=MULTI_SPEAKER_VOICE, speaker=1, seed=11)
    carol, _ = await _synthesise(engine, voice=MULTI_SPEAKER_VOICE, speaker="carol", seed=11)

    assert bob_rates == {SAMPLE_RATE}
    np.testing.assert_array_equal(bob, one)
    assert bob.shape != carol.shape or not np.allclose(bob, carol, atol=1e-3)


@pytest.mark.parametrize("speaker", ["dave", 3, -1])
def test_an_unknown_speaker_is_refused(engine: SpeechEngine, speaker: str | int):
    with pytest.raises(RequestError) as refused:
        engine.prepare(SynthesisRequest(SENTENCE, voice=MULTI_SPEAKER_VOICE, speaker=speaker))
    assert refused.value.code == "unknown_speaker"


@pytest.mark.parametrize("speaker", ["bob", 1])
def test_a_single_speaker_voice_refuses_a_speaker(engine: SpeechEngine, speaker: str | int):
    with pytest.raises(RequestError) as refused:
        engine.prepare(SynthesisRequest(SENTENCE, voice=SINGLE_SPEAKER_VOICE, speaker=speaker))
    assert refused.value.code == "unknown_speaker"


async def test_a_16khz_voice_streams_16khz_audio(engine: SpeechEngine):
    audio, rates = await _synthesise(engine, voice=SINGLE_SPEAKER_VOICE, seed=5)

    assert rates == {SAMPLE_RATE}
    assert audio.size % engine.voices[SINGLE_SPEAKER_VOICE].samples_per_frame == 0
    assert audio.size / SAMPLE_RATE > 1.0  # seconds of speech, not a stub


async def test_the_same_seed_gives_the_same_audio_and_another_seed_other_audio(engine: SpeechEngine):
    first, _ = await _synthesise(engine, voice=MULTI_SPEAKER_VOICE, speaker="alice", seed=21)
    again, _ = await _synthesise(engine, voice=MULTI_SPEAKER_VOICE, speaker="alice", seed=21)
    other, _ = await _synthesise(engine, voice=MULTI_SPEAKER_VOICE, speaker="alice", seed=22)

    np.testing.assert_array_equal(first, again)
    assert first.shape != other.shape or not np.allclose(first, other, atol=1e-3)
