"""Which backend decodes a voice, and why: the NPU when the board has a usable one and the voice a matching
bundle, the CPU otherwise. The reason is shown in /healthz, the log and `appliance doctor`."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from ..config import NpuConfig
from ..file_digest import file_sha256
from ..model.onnx_stage import OrtSettings
from ..model.piper_split import SplitVoice
from ..voices.bundle_manifest import BundleManifest, ManifestError
from ..voices.catalog import VoiceFiles
from .base import StageBackend
from .cpu_onnx import CpuStageBackend
from .npu_detect import NpuProbe, version_tuple
from .npu_rknn import NpuError, NpuStageBackend, NpuTiming

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendChoice:
    decoder: StageBackend
    flow: StageBackend | None
    """Windowed flow backend (NPU); None when the CPU runs the flow for each decoder window."""
    backend: str
    reason: str

    def close(self) -> None:
        """Releases the NPU runtimes (the CPU backends hold nothing to release)."""
        for stage in (self.decoder, self.flow):
            close = getattr(stage, "close", None)
            if close is not None:
                close()


@dataclass(frozen=True)
class BundleCheck:
    manifest: BundleManifest | None
    problem: str | None
    folder: Path


def check_bundle(bundles_folder: Path, files: VoiceFiles, probe: NpuProbe, verify_files: bool = True) -> BundleCheck:
    """Is there a bundle for this voice that this board can run? (manifest, files, source model, SoC, runtime)"""
    folder = bundles_folder / files.name
    if not (folder / "manifest.json").exists():
        return BundleCheck(None, f"no NPU bundle in {folder} (convert the voice: python -m conversion)", folder)
    try:
        manifest = BundleManifest.load(folder)
    except ManifestError as e:
        return BundleCheck(None, f"unreadable bundle: {e}", folder)
    if probe.soc and manifest.target != probe.soc:
        return BundleCheck(manifest, f"bundle compiled for {manifest.target}, this board is {probe.soc}", folder)
    if manifest.source_onnx_sha256 != files.onnx_sha256:
        return BundleCheck(manifest, "bundle was made from a different model file than this voice's", folder)
    if verify_files:
        for name, digest in manifest.files.items():
            path = folder / name
            if not path.exists():
                return BundleCheck(manifest, f"bundle file {name} is missing", folder)
            if file_sha256(path) != digest:
                return BundleCheck(manifest, f"bundle file {name} is damaged (sha256 mismatch)", folder)
    runtime = version_tuple(probe.runtime_version)
    toolkit = version_tuple(manifest.toolkit_version)
    if runtime and toolkit and runtime[:2] < toolkit[:2]:
        return BundleCheck(manifest, f"librknnrt {probe.runtime_version} is older than the toolkit "
                                     f"{manifest.toolkit_version} that compiled the bundle; update librknnrt", folder)
    return BundleCheck(manifest, None, folder)


def choose_backends(files: VoiceFiles, split: SplitVoice, ort: OrtSettings, config: NpuConfig,
                    probe: NpuProbe) -> BackendChoice:
    def cpu(reason: str) -> BackendChoice:
        return BackendChoice(CpuStageBackend(split.decoder, ort), None, "cpu", reason)

    if not config.enabled:
        return cpu("NPU disabled in the configuration (npu.enabled = false)")
    if not probe.usable or probe.runtime_factory is None:
        return cpu(f"no usable NPU: {probe.reason}")
    check = check_bundle(config.bundles_folder, files, probe)
    if check.problem or check.manifest is None:
        return cpu(check.problem or "no bundle")
    manifest = check.manifest
    timing = NpuTiming(config.inference_deadline_s, config.core_retry_s)
    try:
        # The flow's runtimes are released if the decoder's then fail to open.
        with ExitStack() as opened:
            flow = None
            if manifest.flow is not None:
                flow = NpuStageBackend(check.folder / manifest.flow.file, manifest.flow, probe.cores,
                                       probe.runtime_factory, timing)
                opened.callback(flow.close)
            decoder = NpuStageBackend(check.folder / manifest.decoder.file, manifest.decoder, probe.cores,
                                      probe.runtime_factory, timing)
            opened.pop_all()
    except NpuError as e:
        return cpu(f"NPU runtime refused the bundle: {e}")
    cores = ",".join(str(c) for c in probe.cores)
    if manifest.flow is None:
        return BackendChoice(decoder, None, "npu",
                             f"HiFi-GAN on NPU cores {cores} ({manifest.target}, window {manifest.decoder.window}); "
                             "text encoder and flow on CPU (the bundle keeps the flow on the CPU)")
    return BackendChoice(decoder, flow, "npu",
                         f"flow and HiFi-GAN on NPU cores {cores} ({manifest.target}, windows "
                         f"{manifest.flow.window}/{manifest.decoder.window}); text encoder on CPU")
