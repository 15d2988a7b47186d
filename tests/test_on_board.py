"""On a real RK3588 board with the NPU runtime (`pytest -m rk3588` there); skipped elsewhere, saying why."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from appliance.config import SHIPPED_BUNDLES
from appliance.decoders.npu_detect import probe_npu
from appliance.decoders.npu_rknn import NpuStageBackend
from appliance.decoders.selection import check_bundle
from appliance.doctor import diagnose
from appliance.model.onnx_stage import OnnxStage, OrtSettings
from appliance.model.split_cache import load_split_voice
from appliance.synthesis.loading import load_engine
from appliance.synthesis.request import SynthesisRequest
from appliance.voices.catalog import bundled_default_voice
from tests.audio_checks import snr_db
from tests.conftest import make_config

PROBE = probe_npu()
pytestmark = [pytest.mark.rk3588, pytest.mark.skipif(not PROBE.usable, reason=f"needs an RK3588 NPU: {PROBE.reason}")]


def test_doctor_finds_every_core_and_runs_the_shipped_bundle_on_each(tmp_path: Path) -> None:
    report = diagnose(make_config(tmp_path), PROBE)
    assert report["soc"] == "rk3588" and report["npu_cores"] == [0, 1, 2]
    voice = report["voices"]["en_US-joe-medium"]
    assert voice["usable"], voice["problem"]
    for checks in voice["core_checks"].values():
        assert all(check["ok"] for check in checks.values()), checks


def test_the_npu_decoder_matches_onnxruntime_on_the_board(tmp_path: Path) -> None:
    files = bundled_default_voice()
    check = check_bundle(SHIPPED_BUNDLES, files, PROBE)
    assert check.manifest is not None and check.problem is None
    stage = check.manifest.decoder
    npu = NpuStageBackend(check.folder / stage.file, stage, PROBE.cores, PROBE.runtime_factory)
    cpu = OnnxStage(load_split_voice(files.onnx_path, tmp_path).decoder, OrtSettings(2))
    z = np.random.default_rng(0).standard_normal(stage.input_shapes[stage.inputs[0]]).astype(np.float32)
    try:
        reference = cpu.run({stage.inputs[0]: z})[cpu.graph.outputs[0]].reshape(-1)
        assert snr_db(reference, npu.run({stage.inputs[0]: z}).reshape(-1)) >= 45
    finally:
        npu.close()


def test_the_daemon_decodes_on_the_npu_and_streams_complete_audio(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    engine = load_engine(replace(config, synthesis=replace(config.synthesis, inference_threads=4)), PROBE)
    try:
        voice = next(v for v in engine.health().voices if v.name == "en_US-joe-medium")
        assert voice.backend == "npu" and voice.npu_cores_in_service == len(PROBE.cores)

        async def speak() -> np.ndarray:
            prepared = engine.prepare(SynthesisRequest(text="The board speaks with its NPU.", seed=1))
            return np.concatenate([c.samples async for c in engine.stream(prepared)])

        audio = asyncio.run(speak())
        assert len(audio) > 22050 and engine.voices["en_US-joe-medium"].fallback_counters.npu_failures == 0
    finally:
        engine.close()


def test_a_lone_long_sentence_uses_every_core_for_each_npu_stage_and_stays_real_time(tmp_path: Path) -> None:
    """The schedule on the board: a sentence's decoder windows (and, in a bundle with the flow on the NPU, the
    flow windows they read) spread over the three cores, and the lone request runs at least 5x real time."""
    config = make_config(tmp_path)
    engine = load_engine(config, PROBE)
    sentence = ("One long sentence keeps the neural processing unit busy, window after window, on all of its "
                "cores at once, without a pause in between them, until the very last word of it is spoken.")
    try:
        async def speak() -> tuple[np.ndarray, float]:
            prepared = engine.prepare(SynthesisRequest(text=sentence, seed=1))
            started = asyncio.get_running_loop().time()
            audio = np.concatenate([c.samples async for c in engine.stream(prepared)])
            return audio, asyncio.get_running_loop().time() - started

        asyncio.run(speak())  # warm
        audio, seconds = asyncio.run(speak())
        voice = next(v for v in engine.health().voices if v.name == "en_US-joe-medium")
        for stage in (voice.npu_decoder, voice.npu_flow):
            if stage is not None:
                assert all(core.windows > 0 for core in stage.cores), stage
        assert seconds / (len(audio) / 22050) <= 0.2
    finally:
        engine.close()
