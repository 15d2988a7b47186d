"""A released Piper voice, cut into prelude, flow and decoder, gives the original model's audio; decoding it
in windows (free sizes on the CPU, a fixed zero-padded window as on the NPU) matches whole decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from appliance.decoders.cpu_onnx import CpuStageBackend
from appliance.model.graph_cut import GraphIndex, lift_random_nodes
from appliance.model.onnx_stage import OrtSettings
from appliance.model.piper_split import NotAPiperVoiceError, split_piper_voice
from appliance.model.split_cache import load_split_voice
from appliance.synthesis.voice_runtime import LoadedVoice, SynthesisParams
from appliance.synthesis.windowing import WindowPolicy
from appliance.text.phoneme_ids import phonemes_to_ids
from appliance.text.phonemes import Phonemizer
from appliance.voices.catalog import VoiceFiles, bundled_default_voice
from tests.audio_checks import snr_db

TEXT = "The quick brown fox jumps over the lazy dog, and then it runs far away into the quiet forest."
SETTINGS = OrtSettings(intra_op_threads=1)


@pytest.fixture(scope="module")
def files() -> VoiceFiles:
    return bundled_default_voice()


@pytest.fixture(scope="module")
def voice(files: VoiceFiles, tmp_path_factory: pytest.TempPathFactory) -> LoadedVoice:
    split = load_split_voice(files.onnx_path, tmp_path_factory.mktemp("split-cache"))
    return LoadedVoice(files, split, SETTINGS, CpuStageBackend(split.decoder, SETTINGS))


@pytest.fixture(scope="module")
def ids(files: VoiceFiles) -> list[int]:
    return phonemes_to_ids(Phonemizer().sentences(TEXT, "en-us")[0], files.config.phoneme_id_map)


def original_audio(files: VoiceFiles, ids: list[int], length_scale: float = 1.0) -> np.ndarray:
    session = ort.InferenceSession(str(files.onnx_path), providers=["CPUExecutionProvider"])
    feeds = {"input": np.array([ids], dtype=np.int64), "input_lengths": np.array([len(ids)], dtype=np.int64),
             "scales": np.array([0.0, length_scale, 0.0], dtype=np.float32)}
    return session.run(None, feeds)[0].reshape(-1)


def decode(voice: LoadedVoice, ids: list[int], policy: WindowPolicy | None = None, seed: int = 0,
           noise: float = 0.0) -> np.ndarray:
    latent = voice.encode(ids, SynthesisParams(None, 1.0, noise, noise), np.random.default_rng(seed))
    windows = voice.audio_windows(latent, policy)
    parts = []
    while (step := windows.run_next()) is not None:
        parts.append(step[1].reshape(-1))
    return np.concatenate(parts)


def test_cut_points_are_found_from_the_graph(files: VoiceFiles) -> None:
    model, noises = lift_random_nodes(onnx.load(str(files.onnx_path)))
    index = GraphIndex(model)
    assert len(noises) == 2, "the duration predictor's and the prior's random draws"
    (decoder_input,) = index.module_inputs("/dec/")
    assert index.nodes[index.consumers[decoder_input][0]].op_type == "Conv"  # conv_pre reads z·mask
    assert len(index.module_inputs("/flow/")) == 2  # z_p and the mask


def test_prelude_then_decoder_equals_the_original_model(voice: LoadedVoice, files: VoiceFiles, ids: list[int]) -> None:
    latent = voice.encode(ids, SynthesisParams(None, 1.0, 0.0, 0.0), np.random.default_rng(0))
    whole = voice.decode_whole(latent)
    reference = original_audio(files, ids)
    assert whole.shape == reference.shape
    assert np.max(np.abs(whole - reference)) < 1e-4


def test_growing_cpu_windows_match_whole_decoding(voice: LoadedVoice, files: VoiceFiles, ids: list[int]) -> None:
    stitched = decode(voice, ids)
    reference = original_audio(files, ids)
    assert len(stitched) == len(reference)
    assert snr_db(reference, stitched) >= 50


def test_fixed_zero_padded_windows_match_whole_decoding(voice: LoadedVoice, files: VoiceFiles, ids: list[int]) -> None:
    """The NPU's one input shape: 48 frames = 32 useful + 2x8 context, the last window zero-padded."""
    fed: list[int] = []
    run = voice.decoder.run

    def fixed_run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        fed.append(next(iter(feeds.values())).shape[-1])
        return run(feeds)

    voice.decoder.run = fixed_run  # type: ignore[method-assign]
    try:
        stitched = decode(voice, ids, WindowPolicy(context=8, fixed_window=48))
    finally:
        voice.decoder.run = run  # type: ignore[method-assign]
    reference = original_audio(files, ids)
    assert set(fed) == {48}
    assert len(stitched) == len(reference)
    assert snr_db(reference, stitched) >= 50


def test_windowed_flow_then_windowed_decoder_match_the_original(files: VoiceFiles, tmp_path: Path,
                                                                ids: list[int]) -> None:
    """The NPU chain: flow at 96 frames (64 + 2x16 context) feeding the decoder at 48, both zero-padded."""
    split = load_split_voice(files.onnx_path, tmp_path)

    voice = LoadedVoice(files, split, SETTINGS, CpuStageBackend(split.decoder, SETTINGS, fixed_window=48),
                        flow=CpuStageBackend(split.flow, SETTINGS, fixed_window=96))
    stitched = decode(voice, ids)
    reference = original_audio(files, ids)
    assert len(stitched) == len(reference)
    assert snr_db(reference, stitched) >= 45


def test_same_seed_same_audio_other_seed_other_audio(voice: LoadedVoice, ids: list[int]) -> None:
    first = decode(voice, ids, seed=7, noise=0.667)
    assert np.array_equal(first, decode(voice, ids, seed=7, noise=0.667))
    other = decode(voice, ids, seed=8, noise=0.667)
    assert len(other) != len(first) or not np.array_equal(first, other)


def test_split_is_cached_and_reloaded_intact(files: VoiceFiles, tmp_path: Path) -> None:
    first = load_split_voice(files.onnx_path, tmp_path)
    assert len(list(tmp_path.iterdir())) == 1
    again = load_split_voice(files.onnx_path, tmp_path)
    assert [s.name for s in again.stages] == [s.name for s in first.stages]
    assert again.decoder.model.SerializeToString() == first.decoder.model.SerializeToString()


def test_a_model_that_is_not_a_piper_voice_is_refused() -> None:
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"], name="/enc/relu")], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
    )
    with pytest.raises(NotAPiperVoiceError, match="not a Piper voice"):
        split_piper_voice(onnx.helper.make_model(graph))
