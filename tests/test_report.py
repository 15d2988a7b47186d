"""`appliance report`: doctor, bench on NPU and CPU, versions and the bundles' figures in one JSON file, through
the real command line on this machine (no NPU) and in-process on the RKNNLite double (three cores)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import platform
import subprocess
import sys
from pathlib import Path

from appliance.board_report import board_report
from appliance.config import ApplianceConfig
from appliance.voices.catalog import VoiceFiles
from tests.fake_rknnlite import FakeBoard
from tests.test_npu_backend import board, files, npu_config, rk3588, split, write_bundle  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[1]
TEXTS = {"sentence", "paragraph", "long"}


def test_report_without_an_npu_benches_the_cpu_and_says_why_the_npu_was_skipped(state_folder: Path,
                                                                                 tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "appliance", "--state", str(state_folder), "report", "-o", str(out),
                           "--repeat", "1"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {out}" in done.stdout
    report = json.loads(out.read_text())

    assert report["report_format"] == 1
    assert report["system"]["machine"] == platform.machine() and report["system"]["cpu_cores"] >= 1
    assert report["packages"]["onnxruntime"] == importlib.metadata.version("onnxruntime")
    assert report["packages"]["rknn-toolkit-lite2"] is None  # not on x86
    assert report["doctor"]["npu_usable"] is False and report["doctor"]["npu"]
    assert report["bench"]["npu"] == {"skipped": report["doctor"]["npu"]}
    assert report["npu_speedup"] is None
    cpu = report["bench"]["cpu"]
    assert cpu["backend"] == "cpu" and set(cpu["texts"]) == TEXTS
    assert all(0 < text["first_audio_ms"] < text["total_ms"] and text["rtf"] > 0 for text in cpu["texts"].values())
    shipped = report["bundles"]["en_US-joe-medium"]
    assert shipped["target"] == "rk3588" and shipped["pipeline_snr_db"] >= 45
    assert 0 < shipped["pipeline_mcd_db"] < shipped["flow_on_npu_mcd_db"] and shipped["sentences_verified"] >= 10


def test_report_on_a_board_benches_npu_and_cpu_in_one_run(
        npu_config: ApplianceConfig, files: VoiceFiles, split, board: FakeBoard) -> None:  # noqa: F811
    write_bundle(npu_config.npu.bundles_folder, files, split, board)
    report = asyncio.run(board_report(npu_config, 1, files.name, rk3588(board)))

    npu, cpu = report["bench"]["npu"], report["bench"]["cpu"]
    assert npu["backend"] == "npu" and cpu["backend"] == "cpu"
    assert set(npu["texts"]) == set(cpu["texts"]) == TEXTS
    assert set(report["npu_speedup"]) == TEXTS
    for label, speedup in report["npu_speedup"].items():
        assert speedup == round(cpu["texts"][label]["rtf"] / npu["texts"][label]["rtf"], 2)
    assert set(board.windows_by_core) == {0, 1, 2}, "the NPU bench ran windows on every core"
    checks = report["doctor"]["voices"][files.name]["core_checks"]
    assert all(check["ok"] for stage in checks.values() for check in stage.values())
    assert report["bundles"][files.name]["pipeline_snr_db"] == 55.0
    assert report["bundles"][files.name]["flow"]["window"] > 0
