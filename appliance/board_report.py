"""`appliance report`: one JSON a Rock 5B owner can paste into an issue: the board and its software, `doctor`,
`bench` on the NPU and on the CPU (same texts, same run, so their ratio means something), and the bundles'
verification figures."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from . import __version__
from .bench import run_benchmark
from .config import ApplianceConfig
from .decoders.npu_detect import NpuProbe, probe_npu
from .decoders.selection import check_bundle
from .doctor import diagnose
from .voices.catalog import discover_voices

REPORT_FORMAT: Final = 1
PACKAGES: Final = ("onnxruntime", "numpy", "piper-phonemize", "rknn-toolkit-lite2", "aiohttp", "wyoming", "av",
                   "zeroconf")
DEVICE_TREE_MODEL: Final = Path("/proc/device-tree/model")
OS_RELEASE: Final = Path("/etc/os-release")


async def board_report(config: ApplianceConfig, repeat: int, voice: str | None = None,
                       probe: NpuProbe | None = None) -> dict[str, Any]:
    probe = probe or probe_npu()
    report: dict[str, Any] = {
        "report_format": REPORT_FORMAT,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "appliance_version": __version__,
        "system": system_facts(),
        "packages": {name: _version(name) for name in PACKAGES},
        "doctor": diagnose(config, probe),
        "bundles": bundle_figures(config, probe),
    }
    cpu = await run_benchmark(replace(config, npu=replace(config.npu, enabled=False)), voice, repeat)
    if probe.usable and config.npu.enabled:
        npu = await run_benchmark(config, voice, repeat, probe)
    else:
        why = probe.reason if config.npu.enabled else "npu.enabled is false in the configuration"
        npu = {"skipped": why}
    report["bench"] = {"npu": npu, "cpu": cpu}
    report["npu_speedup"] = _speedup(npu, cpu)
    return report


def system_facts() -> dict[str, Any]:
    return {
        "board": _read(DEVICE_TREE_MODEL).rstrip("\x00\n") or None,
        "machine": platform.machine(),
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
        "cpu_cores": os.cpu_count(),
        "memory_mb": _memory_mb(),
    }


def bundle_figures(config: ApplianceConfig, probe: NpuProbe) -> dict[str, Any]:
    """Each voice's bundle as its converter verified it (simulator SNRs, windows), usable here or not."""
    figures: dict[str, Any] = {}
    for name, files in discover_voices(config.voices.folder).items():
        manifest = check_bundle(config.npu.bundles_folder, files, probe).manifest
        if manifest is None:
            figures[name] = None
            continue
        figures[name] = {
            "target": manifest.target, "toolkit_version": manifest.toolkit_version, "created_at": manifest.created_at,
            "pipeline_snr_db": manifest.pipeline_snr_db, "flow_on_npu_snr_db": manifest.flow_on_npu_snr_db,
            "pipeline_mcd_db": manifest.pipeline_mcd_db, "flow_on_npu_mcd_db": manifest.flow_on_npu_mcd_db,
            "sentences_verified": len(manifest.verification),
            "decoder": {"window": manifest.decoder.window, "snr_db": manifest.decoder.snr_db},
            "flow": None if manifest.flow is None else {"window": manifest.flow.window,
                                                        "snr_db": manifest.flow.snr_db},
        }
    return figures


def _speedup(npu: dict[str, Any], cpu: dict[str, Any]) -> dict[str, float] | None:
    """CPU real-time factor over the NPU's, per text (> 1: the NPU is faster)."""
    if "texts" not in npu:
        return None
    return {label: round(cpu["texts"][label]["rtf"] / npu["texts"][label]["rtf"], 2)
            for label in npu["texts"] if npu["texts"][label]["rtf"] > 0}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _os_name() -> str | None:
    for line in _read(OS_RELEASE).splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.partition("=")[2].strip().strip('"')
    return None


def _memory_mb() -> int | None:
    for line in _read(Path("/proc/meminfo")).splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return None
