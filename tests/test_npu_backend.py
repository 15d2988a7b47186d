"""The NPU path on a double of rknn-toolkit-lite2 (no RK3588 here): windows spread over three cores, start-up
fallback with a reason for every way a bundle can be unusable, and mid-stream failures or hangs that the CPU
covers so the client's audio equals the CPU-only audio sample for sample."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from appliance.config import ApplianceConfig, SynthesisConfig
from appliance.decoders.base import tile_to_shapes
from appliance.decoders.cpu_onnx import CpuStageBackend
from appliance.decoders.npu_detect import NpuProbe
from appliance.decoders.npu_rknn import NpuError, NpuStageBackend
from appliance.decoders.selection import check_bundle, choose_backends
from appliance.doctor import diagnose
from appliance.file_digest import file_sha256
from appliance.health import VoiceHealth
from appliance.model.onnx_stage import OrtSettings
from appliance.model.piper_split import SplitVoice, StageGraph
from appliance.model.split_cache import load_split_voice
from appliance.synthesis.engine import SpeechEngine
from appliance.synthesis.loading import load_engine
from appliance.synthesis.request import SynthesisRequest
from appliance.synthesis.voice_runtime import LoadedVoice
from appliance.voices.bundle_manifest import BundleManifest, CompiledStage
from appliance.voices.catalog import VoiceFiles, bundled_default_voice, discover_voices
from tests.conftest import make_config
from tests.fake_rknnlite import CompiledModel, FakeBoard
from tests.voice_factory import MULTI_SPEAKER_VOICE, SPEAKERS, small_voices_folder  # noqa: F401  (fixture)

FLOW_WINDOW, FLOW_CONTEXT = 96, 16
DECODER_WINDOW, DECODER_CONTEXT = 48, 8
TEXT = "The appliance keeps talking when its NPU stumbles. Nobody hears the difference, sample for sample."
ORT = OrtSettings(intra_op_threads=1)


def channels(graph: StageGraph) -> dict[str, int]:
    return {i.name: i.type.tensor_type.shape.dim[1].dim_value for i in graph.model.graph.input}


def write_bundle(folder: Path, files: VoiceFiles, split: SplitVoice, board: FakeBoard, target: str = "rk3588",
                 toolkit: str = "2.5.0") -> Path:
    """A bundle as `conversion` writes it; the `.rknn` files hold stand-in bytes that the double 'loads'."""
    bundle = folder / files.name
    bundle.mkdir(parents=True, exist_ok=True)
    stages = {}
    for graph, window, context in ((split.flow, FLOW_WINDOW, FLOW_CONTEXT),
                                   (split.decoder, DECODER_WINDOW, DECODER_CONTEXT)):
        path = bundle / f"{graph.name}-{window}.rknn"
        path.write_bytes(b"RKNN stand-in for " + graph.name.encode())
        shapes = {n: (1, c, window) for n, c in channels(graph).items()}  # as `conversion.input_shapes`
        board.models[str(path)] = CompiledModel(graph, window, shapes)
        stages[graph.name] = CompiledStage(path.name, window, context, graph.inputs, graph.framed_inputs, shapes, 56.0)
    manifest = BundleManifest(
        voice=files.name, target=target, toolkit_version=toolkit, source_onnx_sha256=file_sha256(files.onnx_path),
        sample_rate=files.config.sample_rate, flow=stages["flow"], decoder=stages["decoder"], pipeline_snr_db=55.0,
        files={p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in bundle.glob("*.rknn")},
        created_at="2026-11-22T00:00:00Z",
    )
    (bundle / "manifest.json").write_text(manifest.to_json())
    return bundle


def rk3588(board: FakeBoard, runtime_version: str = "2.5.0") -> NpuProbe:
    return NpuProbe(True, "rk3588 NPU with 3 core(s) (double)", "rk3588", (0, 1, 2), runtime_version, "0.9.8",
                    runtime_factory=board.runtime)


@pytest.fixture(scope="module")
def files() -> VoiceFiles:
    return bundled_default_voice()


@pytest.fixture(scope="module")
def split(files: VoiceFiles, state_folder: Path) -> SplitVoice:
    return load_split_voice(files.onnx_path, state_folder / "split-cache")


@pytest.fixture
def board() -> Iterator[FakeBoard]:
    board = FakeBoard()
    yield board
    board.release_hangs.set()


@pytest.fixture
def npu_config(tmp_path: Path, state_folder: Path) -> ApplianceConfig:
    return make_config(state_folder, **{"npu.bundles_folder": str(tmp_path / "bundles"),
                                        "npu.inference_deadline_s": 1.0, "npu.core_retry_s": 30.0})


@pytest.fixture(scope="module")
def cpu_reference(files: VoiceFiles, split: SplitVoice) -> Iterator[SpeechEngine]:
    """The CPU alone, decoding the very windows the NPU would (same sizes, same zero padding)."""

    voice = LoadedVoice(files, split, ORT, CpuStageBackend(split.decoder, ORT, DECODER_WINDOW, DECODER_CONTEXT),
                        flow=CpuStageBackend(split.flow, ORT, FLOW_WINDOW, FLOW_CONTEXT))
    engine = SpeechEngine({files.name: voice}, files.name, SynthesisConfig(), 10_000)
    yield engine
    engine.close()


async def speak(engine: SpeechEngine, text: str = TEXT, seed: int = 99) -> np.ndarray:
    prepared = engine.prepare(SynthesisRequest(text=text, seed=seed))
    return np.concatenate([chunk.samples async for chunk in engine.stream(prepared)])


def voice_health(engine: SpeechEngine, name: str) -> VoiceHealth:
    """The voice as /healthz and the status line see it."""
    return next(voice for voice in engine.health().voices if voice.name == name)


async def test_a_matching_bundle_runs_flow_and_decoder_on_the_npu(
    npu_config: ApplianceConfig, files: VoiceFiles, split: SplitVoice, board: FakeBoard, cpu_reference: SpeechEngine
) -> None:
    write_bundle(npu_config.npu.bundles_folder, files, split, board)
    engine = load_engine(npu_config, rk3588(board))
    try:
        health = voice_health(engine, files.name)
        assert health.backend == "npu" and health.flow == "npu"
        assert "NPU cores 0,1,2" in health.reason
        assert health.npu_cores_in_service == 3
        audio = await speak(engine)
        assert np.array_equal(audio, await speak(cpu_reference))
        assert board.total_windows() > 0 and not board.errors
        fallback = voice_health(engine, files.name).fallback
        assert fallback.npu_failures == 0 and fallback.npu_windows > 0
    finally:
        engine.close()


async def test_windows_of_concurrent_requests_spread_over_the_three_cores(
    npu_config: ApplianceConfig, files: VoiceFiles, split: SplitVoice, board: FakeBoard
) -> None:
    write_bundle(npu_config.npu.bundles_folder, files, split, board)
    config = replace(npu_config, synthesis=replace(npu_config.synthesis, inference_threads=4))
    engine = load_engine(config, rk3588(board))
    try:
        board.windows_by_core.clear()
        await asyncio.gather(*(speak(engine, TEXT, seed) for seed in range(3)))
        assert set(board.windows_by_core) == {0, 1, 2}
        assert all(count > 0 for count in board.windows_by_core.values())
    finally:
        engine.close()


async def test_a_lone_sentence_pipelines_flow_and_decoder_windows_over_the_three_cores(
    npu_config: ApplianceConfig, files: VoiceFiles, split: SplitVoice, board: FakeBoard, cpu_reference: SpeechEngine
) -> None:
    """Each decoder window runs the flow windows it reads when it first needs them, so the decoder of a sentence's
    first windows runs while its later flow windows are still to come, and both stages use every core."""
    write_bundle(npu_config.npu.bundles_folder, files, split, board)
    config = replace(npu_config, synthesis=replace(npu_config.synthesis, inference_threads=3))
    engine = load_engine(config, rk3588(board))
    sentence = ("One long sentence keeps the flow and the decoder busy together, window after window, on three "
                "cores at once, without any pause in between them")
    try:
        board.timeline.clear()
        audio = await speak(engine, sentence)
        flow = [run for run in board.timeline if run[0] == "flow"]
        decoder = [run for run in board.timeline if run[0] == "decoder"]
        assert len(flow) >= 4 and len(decoder) >= 4 * 2
        first_decoder_start = min(start for _, _, start, _ in decoder)
        last_flow_start = max(start for _, _, start, _ in flow)
        assert first_decoder_start < last_flow_start, "the decoder waited for the whole sentence's flow"
        assert {core for _, core, _, _ in flow} == {core for _, core, _, _ in decoder} == {0, 1, 2}
        assert np.array_equal(audio, await speak(cpu_reference, sentence))
    finally:
        engine.close()


def test_start_up_falls_back_to_the_cpu_and_says_why(
    npu_config: ApplianceConfig, files: VoiceFiles, split: SplitVoice, board: FakeBoard, tmp_path: Path
) -> None:
    def reason(probe: NpuProbe, config: ApplianceConfig = npu_config) -> str:
        choice = choose_backends(files, split, ORT, config.npu, probe)
        assert choice.backend == "cpu"
        return choice.reason

    no_board = NpuProbe(False, "not a supported Rockchip SoC (no rockchip,rk3588/rk3576/rk356x in the device tree)")
    assert "not a supported Rockchip SoC" in reason(no_board)
    assert "no NPU bundle" in reason(rk3588(board))
    off = replace(npu_config, npu=replace(npu_config.npu, enabled=False))
    assert "disabled" in reason(rk3588(board), off)

    bundle = write_bundle(npu_config.npu.bundles_folder, files, split, board, target="rk3576")
    assert "compiled for rk3576, this board is rk3588" in reason(rk3588(board))
    write_bundle(npu_config.npu.bundles_folder, files, split, board, toolkit="2.5.0")
    assert "older than the toolkit" in reason(rk3588(board, runtime_version="2.0.0"))
    next(bundle.glob("decoder-*.rknn")).write_bytes(b"flipped bits")
    assert "damaged" in reason(rk3588(board))

    write_bundle(npu_config.npu.bundles_folder, files, split, board)
    board.models.clear()  # the runtime cannot load these files
    assert "NPU runtime refused the bundle" in reason(rk3588(board))

    other = tmp_path / "other"
    other.mkdir()
    (other / f"{files.name}.onnx").write_bytes(files.onnx_path.read_bytes() + b"\0")
    altered = replace(files, onnx_path=other / f"{files.name}.onnx")
    assert "different model file" in choose_backends(altered, split, ORT, npu_config.npu, rk3588(board)).reason


def test_a_core_refusing_to_start_releases_the_cores_opened_before_it(
    npu_config: ApplianceConfig, files: VoiceFiles, split: SplitVoice, board: FakeBoard
) -> None:
    bundle = write_bundle(npu_config.npu.bundles_folder, files, split, board)
    decoder = BundleManifest.load(bundle).decoder
    board.fail_init_cores = {2}
    with pytest.raises(NpuError, match="init_runtime on NPU core 2 failed"):
        NpuStageBackend(bundle / decoder.file, decoder, (0, 1, 2), board.runtime)
    assert [r.initialised_core for r in board.initialised_runtimes()] == [0, 1]
    assert len(board.runtimes) == 3 and board.unreleased_runtimes() == []


def test_an_init_runtime_that_raises_is_an_npu_error_and_start_up_uses_the_cpu(
    npu_config: ApplianceConfig, files: VoiceFiles, split: SplitVoice, board: FakeBoard
) -> None:
    bundle = write_bundle(npu_config.npu.bundles_folder, files, split, board)
    decoder = BundleManifest.load(bundle).decoder
    board.raise_init_cores = {1}
    with pytest.raises(NpuError, match="init_runtime on NPU core 1 failed"):
        NpuStageBackend(bundle / decoder.file, decoder, (0, 1, 2), board.runtime)
    assert board.unreleased_runtimes() == []
    engine = load_engine(npu_config, rk3588(board))
    try:
        health = voice_health(engine, files.name)
        assert health.backend == "cpu" and "init_runtime on NPU core 1 failed" in health.reason
    finally:
        engine.close()
    assert board.unreleased_runtimes() == []


def test_a_decoder_the_npu_refuses_releases_the_flow_already_loaded(
    npu_config: ApplianceConfig, files: VoiceFiles, split: SplitVoice, board: FakeBoard
) -> None:
    bundle = write_bundle(npu_config.npu.bundles_folder, files, split, board)
    del board.models[str(bundle / BundleManifest.load(bundle).decoder.file)]  # the runtime cannot load it
    choice = choose_backends(files, split, ORT, npu_config.npu, rk3588(board))
    assert choice.backend == "cpu" and "NPU runtime refused the bundle" in choice.reason
    assert [r.initialised_core for r in board.initialised_runtimes()] == [0, 1, 2], "the flow was on the NPU"
    assert board.unreleased_runtimes() == []


def test_closing_the_npu_backends_releases_every_runtime(
    npu_config: ApplianceConfig, files: VoiceFiles, split: SplitVoice, board: FakeBoard
) -> None:
    write_bundle(npu_config.npu.bundles_folder, files, split, board)
    choice = choose_backends(files, split, ORT, npu_config.npu, rk3588(board))
    assert choice.backend == "npu" and choice.flow is not None
    assert len(board.unreleased_runtimes()) == 6, "flow and decoder, one runtime per core each"
    choice.flow.close()
    choice.decoder.close()
    assert board.unreleased_runtimes() == []


def test_a_start_up_that_fails_after_the_npu_backends_were_built_releases_them(
    npu_config: ApplianceConfig, files: VoiceFiles, split: SplitVoice, board: FakeBoard
) -> None:
    write_bundle(npu_config.npu.bundles_folder, files, split, board)
    board.fail_after_windows = board.total_windows()  # the voice's first decoder run (measuring it) fails
    with pytest.raises(RuntimeError, match="injected"):
        load_engine(npu_config, rk3588(board))
    assert len(board.initialised_runtimes()) == 6 and board.unreleased_runtimes() == []


async def test_an_npu_failure_mid_stream_continues_on_the_cpu_sample_for_sample(
    npu_config: ApplianceConfig, files: VoiceFiles, split: SplitVoice, board: FakeBoard, cpu_reference: SpeechEngine
) -> None:
    write_bundle(npu_config.npu.bundles_folder, files, split, board)
    engine = load_engine(npu_config, rk3588(board))
    try:
        board.fail_after_windows = board.total_windows() + 4
        audio = await speak(engine)
        assert np.array_equal(audio, await speak(cpu_reference))
        health = voice_health(engine, files.name)
        counters = health.fallback
        # Windows running beside the first failed one may fail too; the request falls back once.
        assert counters.npu_failures >= 1 and counters.requests_fallen_back == 1
        assert counters.npu_windows >= 4 and counters.cpu_fallback_windows > 0
        assert health.npu_flow is not None and health.npu_decoder is not None
        cores = [*health.npu_flow.cores, *health.npu_decoder.cores]
        assert any(not core.in_service for core in cores), "the failing core is taken out of service"
        assert health.npu_cores_in_service < 3
    finally:
        engine.close()


async def test_a_hung_npu_core_is_abandoned_after_the_deadline(
    npu_config: ApplianceConfig, files: VoiceFiles, split: SplitVoice, board: FakeBoard, cpu_reference: SpeechEngine
) -> None:
    write_bundle(npu_config.npu.bundles_folder, files, split, board)
    engine = load_engine(npu_config, rk3588(board))
    try:
        board.hang_cores = {0, 1, 2}
        started = time.monotonic()
        audio = await speak(engine)
        elapsed = time.monotonic() - started
        assert np.array_equal(audio, await speak(cpu_reference))
        assert elapsed < 20, "one deadline, then the CPU; not one deadline per window"
        assert engine.voices[files.name].fallback_counters.requests_fallen_back == 1
    finally:
        board.release_hangs.set()
        engine.close()


async def test_a_rested_core_is_tried_again_later(
    npu_config: ApplianceConfig, files: VoiceFiles, split: SplitVoice, board: FakeBoard
) -> None:
    write_bundle(npu_config.npu.bundles_folder, files, split, board)
    config = replace(npu_config, npu=replace(npu_config.npu, core_retry_s=0.3))
    engine = load_engine(config, rk3588(board))
    try:
        board.fail_cores = {0}
        await speak(engine, "One sentence to trip core zero.")
        voice = engine.voices[files.name]
        assert voice.decoder.health().cores[0].failures + voice.flow.health().cores[0].failures >= 1
        board.fail_cores = set()
        await asyncio.sleep(0.5)
        board.windows_by_core.clear()
        await asyncio.gather(*(speak(engine, TEXT, seed) for seed in range(3)))
        assert board.windows_by_core.get(0, 0) > 0, "core 0 is back in service"
    finally:
        engine.close()


def test_doctor_reports_the_board_and_runs_each_core(
    npu_config: ApplianceConfig, files: VoiceFiles, split: SplitVoice, board: FakeBoard
) -> None:
    write_bundle(npu_config.npu.bundles_folder, files, split, board)
    report = diagnose(npu_config, rk3588(board))
    assert report["soc"] == "rk3588" and report["npu_usable"] and report["npu_cores"] == [0, 1, 2]
    voice = report["voices"][files.name]
    assert voice["usable"] and voice["target"] == "rk3588"
    for stage in ("flow", "decoder"):
        assert set(voice["core_checks"][stage]) == {"0", "1", "2"}
        assert all(check["ok"] for check in voice["core_checks"][stage].values())
    assert board.windows_by_core == {0: 2, 1: 2, 2: 2}


def test_the_shipped_bundle_matches_the_default_voice() -> None:
    """models/rknn/en_US-joe-medium was made from this very model file and is intact."""
    from appliance.config import SHIPPED_BUNDLES

    board = NpuProbe(True, "rk3588", "rk3588", (0, 1, 2), "2.5.0")
    check = check_bundle(SHIPPED_BUNDLES, bundled_default_voice(), board)
    assert check.problem is None
    assert check.manifest is not None and check.manifest.pipeline_snr_db >= 45


async def test_a_multi_speaker_bundle_speaks_each_speaker_on_the_npu_as_the_cpu_does(
    npu_config: ApplianceConfig, small_voices_folder: Path, board: FakeBoard  # noqa: F811
) -> None:
    """The speaker embedding, an input of flow and decoder, is fed at the window's length the stages were
    compiled at; the audio is the CPU's, sample for sample, for every speaker."""
    files = discover_voices(small_voices_folder)[MULTI_SPEAKER_VOICE]
    split = load_split_voice(files.onnx_path, None)
    write_bundle(npu_config.npu.bundles_folder, files, split, board)
    config = replace(npu_config, voices=replace(npu_config.voices, folder=small_voices_folder,
                                                default=MULTI_SPEAKER_VOICE))
    engine = load_engine(config, rk3588(board))
    reference_voice = LoadedVoice(files, split, ORT,
                                  CpuStageBackend(split.decoder, ORT, DECODER_WINDOW, DECODER_CONTEXT),
                                  flow=CpuStageBackend(split.flow, ORT, FLOW_WINDOW, FLOW_CONTEXT))
    reference = SpeechEngine({files.name: reference_voice}, files.name, SynthesisConfig(), 10_000)
    try:
        assert voice_health(engine, files.name).flow == "npu"
        heard = []
        for speaker in SPEAKERS:
            request = SynthesisRequest(text="Speakers differ.", seed=3, speaker=speaker)
            audio = await speak_request(engine, request)
            assert np.array_equal(audio, await speak_request(reference, request)), speaker
            heard.append(audio)
        assert not np.array_equal(heard[0], heard[1]), "the embedding reached the stages"
        assert board.total_windows() > 0 and not board.errors, board.errors
    finally:
        engine.close()
        reference.close()


async def speak_request(engine: SpeechEngine, request: SynthesisRequest) -> np.ndarray:
    return np.concatenate([chunk.samples async for chunk in engine.stream(engine.prepare(request))])


def test_a_speaker_embedding_is_repeated_along_the_window_it_was_compiled_at() -> None:
    framed = np.arange(2 * 48, dtype=np.float32).reshape(1, 2, 48)
    speaker = np.array([[[0.5], [-1.0], [2.0]]], dtype=np.float32)
    inputs = tile_to_shapes({"z": framed, "g": speaker}, ("z", "g"), {"z": (1, 2, 48), "g": (1, 3, 48)})
    assert inputs[0].shape == (1, 2, 48) and np.array_equal(inputs[0], framed)
    assert inputs[1].shape == (1, 3, 48) and inputs[1].flags.c_contiguous
    assert np.array_equal(inputs[1], np.repeat(speaker, 48, axis=2))
    # A bundle compiled with the embedding at length 1 (older ones) gets it as it is.
    assert tile_to_shapes({"g": speaker}, ("g",), {"g": (1, 3, 1)})[0].shape == (1, 3, 1)
