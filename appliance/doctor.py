"""`appliance doctor`: what this board offers the appliance, and one NPU inference per core per voice."""

from __future__ import annotations

import platform
import time
from typing import Any

import numpy as np

from .config import ApplianceConfig
from .decoders.npu_detect import NpuProbe, probe_npu
from .decoders.npu_rknn import NpuError, NpuStageBackend, NpuTiming
from .decoders.selection import check_bundle
from .voices.bundle_manifest import CompiledStage
from .voices.catalog import discover_voices


def diagnose(config: ApplianceConfig, probe: NpuProbe | None = None) -> dict[str, Any]:
    probe = probe or probe_npu()
    report: dict[str, Any] = {
        "machine": platform.machine(),
        "soc": probe.soc,
        "npu_usable": probe.usable,
        "npu": probe.reason,
        "npu_driver_version": probe.driver_version,
        "librknnrt_version": probe.runtime_version,
        "npu_cores": list(probe.cores),
        "npu_enabled_in_config": config.npu.enabled,
        "bundles_folder": str(config.npu.bundles_folder),
        "voices": {},
    }
    for name, files in discover_voices(config.voices.folder).items():
        check = check_bundle(config.npu.bundles_folder, files, probe)
        entry: dict[str, Any] = {"bundle": str(check.folder), "usable": check.problem is None, "problem": check.problem}
        if check.manifest is not None:
            m = check.manifest
            entry.update(target=m.target, toolkit_version=m.toolkit_version, pipeline_snr_db=m.pipeline_snr_db,
                         flow_window=m.flow.window if m.flow else "cpu", decoder_window=m.decoder.window,
                         created_at=m.created_at)
            if check.problem is None and probe.usable and probe.runtime_factory is not None:
                entry["core_checks"] = {
                    stage_name: _run_each_core(check.folder, stage, probe)
                    for stage_name, stage in (("flow", m.flow), ("decoder", m.decoder)) if stage is not None
                }
        report["voices"][name] = entry
    return report


def _run_each_core(folder, stage: CompiledStage, probe: NpuProbe) -> dict[str, Any]:
    """One inference of zeros on every core, timed: proves each core loads and runs the model."""
    results: dict[str, Any] = {}
    for core in probe.cores:
        try:
            backend = NpuStageBackend(folder / stage.file, stage, [core], probe.runtime_factory, NpuTiming(5.0, 60.0))
        except NpuError as e:
            results[str(core)] = {"ok": False, "error": str(e)}
            continue
        feeds = {name: np.zeros(stage.input_shapes[name], np.float32) for name in stage.inputs}
        try:
            started = time.perf_counter()
            output = backend.run(feeds)
            results[str(core)] = {"ok": bool(np.isfinite(output).all()), "ms": round((time.perf_counter() - started)
                                                                                      * 1000, 2)}
        except (NpuError, KeyError) as e:
            results[str(core)] = {"ok": False, "error": str(e)}
        finally:
            backend.close()
    return results
