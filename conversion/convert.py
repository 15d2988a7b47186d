"""Piper voice → NPU bundle: split (the daemon's own code), compile flow and decoder at the largest clean
window, verify the windowed chain in the simulator against onnxruntime, write the bundle and its manifest."""

from __future__ import annotations

import datetime
import hashlib
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx

from appliance.model.piper_split import NotAPiperVoiceError, StageGraph
from appliance.model.split_cache import load_split_voice
from appliance.voices.bundle_manifest import MANIFEST_NAME, BundleManifest, CompiledStage
from appliance.voices.catalog import VoiceFiles
from appliance.voices.voice_config import VoiceConfig, VoiceConfigError

from .compile_stage import BuildError, SimulatedStage, compile_stage, input_shapes
from .verification import VERIFY_SENTENCES, Verification, verify

FLOW_WINDOWS = (128, 96)
"""64 useful frames + 2 x 32 context first. The flow's four couplings reach 32 frames each side: with 16 frames of
context its fixed windows alone (fp32, no NPU) cost joe-medium's long sentences down to 37.6 dB."""
DECODER_WINDOWS = (48, 40, 32, 24)
"""32 useful + 2 x 8 first; 64 frames logs REGTASK errors for joe-medium (a register field overflows)."""
SUPPORTED_TARGETS = ("rk3588", "rk3576", "rk3568", "rk3566", "rk3562")

Progress = Callable[[str], None]
GraphTransform = Callable[[onnx.ModelProto], onnx.ModelProto]


class ConversionError(RuntimeError):
    """The voice cannot be converted, or the result failed verification; the message says which and why."""


@dataclass(frozen=True)
class ConversionOptions:
    target: str = "rk3588"
    flow_window: int | None = None
    """Fixed flow window (frames, context included); None: the largest of FLOW_WINDOWS that builds cleanly."""
    flow_context: int = 32
    decoder_window: int | None = None
    decoder_context: int = 8
    flow_placement: str = "auto"
    """"npu": flow and decoder on the NPU or fail; "auto": the flow falls back to the CPU if the chain with it
    fails the gate; "cpu": only the decoder is compiled."""
    min_snr_db: float = 45.0
    """The gate: windowed NPU chain against onnxruntime's whole-utterance audio, worst sentence."""
    sentences: tuple[str, ...] = VERIFY_SENTENCES


def convert_voice(
    onnx_path: Path,
    out_folder: Path,
    options: ConversionOptions,
    progress: Progress = print,
    config_path: Path | None = None,
    decoder_transform: GraphTransform | None = None,
) -> BundleManifest:
    """`decoder_transform` alters the decoder graph before compiling (tests use it to prove the gate bites)."""
    if options.target not in SUPPORTED_TARGETS:
        raise ConversionError(f"target {options.target!r} is not one of {', '.join(SUPPORTED_TARGETS)}")
    files = voice_files(onnx_path, config_path)
    progress(f"[1/5] splitting {files.name} into prelude, flow and decoder")
    try:
        split = load_split_voice(files.onnx_path, None)
    except NotAPiperVoiceError as e:
        raise ConversionError(f"{onnx_path}: {e}") from e
    except onnx.onnx_cpp2py_export.checker.ValidationError as e:  # type: ignore[attr-defined]
        raise ConversionError(f"{onnx_path}: not an ONNX model: {e}") from e
    decoder_graph = split.decoder
    if decoder_transform is not None:
        decoder_graph = StageGraph(decoder_graph.name, decoder_transform(decoder_graph.model), decoder_graph.inputs,
                                   decoder_graph.outputs, decoder_graph.framed_inputs)
    out_folder.mkdir(parents=True, exist_ok=True)
    log_path = out_folder / "toolkit.log"
    log_path.unlink(missing_ok=True)
    decoder = _compile_largest_clean("decoder", decoder_graph, options.decoder_window, DECODER_WINDOWS,
                                     options.decoder_context, options, log_path, progress, step=2)
    flow: SimulatedStage | None = None
    try:
        rejected: Verification | None = None
        if options.flow_placement != "cpu":
            flow = _compile_largest_clean("flow", split.flow, options.flow_window, FLOW_WINDOWS,
                                          options.flow_context, options, log_path, progress, step=3)
            progress(f"[4/5] verifying flow + decoder in the simulator, windowed, on {len(options.sentences)} "
                     "sentences against onnxruntime's whole-utterance audio")
            checked = verify(files, split, flow, decoder, options.sentences, progress)
            progress(f"      worst {checked.worst_snr_db:.1f} dB, MCD {checked.worst_mcd_db:.3f} dB (flow alone "
                     f"{checked.stage_snr['flow']:.1f} dB, decoder alone {checked.stage_snr['decoder']:.1f} dB); "
                     f"gate {options.min_snr_db:.0f} dB")
            if checked.worst_snr_db < options.min_snr_db:
                if options.flow_placement == "npu":
                    raise ConversionError(f"verification failed: the NPU chain matches onnxruntime at only "
                                          f"{checked.worst_snr_db:.1f} dB (gate {options.min_snr_db:.0f} dB); "
                                          "no bundle")
                progress("      the fp16 flow costs too much accuracy: the flow stays on the CPU")
                rejected = checked
                flow.release()
                flow = None
        if flow is None:
            progress(f"[4/5] verifying the decoder in the simulator, windowed, on {len(options.sentences)} "
                     "sentences against onnxruntime's whole-utterance audio")
            checked = verify(files, split, None, decoder, options.sentences, progress)
            progress(f"      worst {checked.worst_snr_db:.1f} dB, MCD {checked.worst_mcd_db:.3f} dB; "
                     f"gate {options.min_snr_db:.0f} dB")
            if checked.worst_snr_db < options.min_snr_db:
                raise ConversionError(f"verification failed: the NPU decoder matches onnxruntime at only "
                                      f"{checked.worst_snr_db:.1f} dB (gate {options.min_snr_db:.0f} dB); "
                                      "no bundle written")
        progress(f"[5/5] writing the bundle to {out_folder}")
        return write_bundle(out_folder, files, flow, decoder, checked, options.target, rejected)
    finally:
        decoder.release()
        if flow is not None:
            flow.release()


def voice_files(onnx_path: Path, config_path: Path | None) -> VoiceFiles:
    if not onnx_path.is_file():
        raise ConversionError(f"{onnx_path} does not exist")
    config_path = config_path or onnx_path.with_name(onnx_path.name + ".json")
    if not config_path.is_file():
        raise ConversionError(f"{config_path} is missing: a Piper voice is NAME.onnx with NAME.onnx.json")
    try:
        config = VoiceConfig.load(config_path)
    except VoiceConfigError as e:
        raise ConversionError(f"not a Piper voice configuration: {e}") from e
    name = onnx_path.name.removesuffix(".onnx")
    return VoiceFiles(name, onnx_path, config_path, config)


def _compile_largest_clean(label: str, graph: StageGraph, fixed: int | None, candidates: tuple[int, ...],
                           context: int, options: ConversionOptions, log_path: Path, progress: Progress,
                           step: int) -> SimulatedStage:
    windows = (fixed,) if fixed else candidates
    failures = []
    for window in windows:
        if window <= 2 * context:
            raise ConversionError(f"{label} window {window} leaves no useful frames beside 2x{context} context")
        progress(f"[{step}/5] compiling the {label} for {options.target} at {window} frames "
                 f"({window - 2 * context} useful + 2x{context} context), fp16")
        try:
            return compile_stage(graph, window, context, options.target, log_path)
        except BuildError as e:
            failures.append(str(e))
            progress(f"      refused: {e}")
    hint = ""
    if fixed:
        smaller = [w for w in candidates if w < fixed]
        hint = f"; try a smaller window, e.g. --{label}-window {smaller[0]}" if smaller else ""
    raise ConversionError(f"the {label} did not build cleanly at any of {list(windows)} frames{hint}; "
                          f"toolkit log: {log_path}")


def write_bundle(out_folder: Path, files: VoiceFiles, flow: SimulatedStage | None, decoder: SimulatedStage,
                 checked: Verification, target: str, rejected: Verification | None = None) -> BundleManifest:
    """`checked`: the shipped chain's verification; `rejected`: the flow-on-NPU chain's, when it failed."""
    stage_snr = checked.stage_snr
    with tempfile.TemporaryDirectory(dir=out_folder, prefix=".bundle-") as staging_name:
        staging = Path(staging_name)
        stages: dict[str, CompiledStage | None] = {"flow": None}
        for label, stage in (("flow", flow), ("decoder", decoder)):
            if stage is None:
                continue
            file_name = f"{label}-{target}-w{stage.window}.rknn"
            stage.export(staging / file_name)
            stages[label] = CompiledStage(
                file=file_name, window=stage.window, context=stage.context, inputs=stage.graph.inputs,
                framed_inputs=stage.graph.framed_inputs,
                input_shapes={k: tuple(v) for k, v in input_shapes(stage.graph, stage.window).items()},
                snr_db=round(stage_snr[label], 2),
            )
        shutil.copyfile(files.config_path, staging / f"{files.name}.onnx.json")
        manifest = BundleManifest(
            voice=files.name, target=target, toolkit_version=_toolkit_version(),
            source_onnx_sha256=files.onnx_sha256, sample_rate=files.config.sample_rate,
            flow=stages["flow"], decoder=stages["decoder"], pipeline_snr_db=round(checked.worst_snr_db, 2),
            flow_on_npu_snr_db=None if rejected is None else round(rejected.worst_snr_db, 2),
            pipeline_mcd_db=round(checked.worst_mcd_db, 3),
            flow_on_npu_mcd_db=None if rejected is None else round(rejected.worst_mcd_db, 3),
            verification=checked.sentences,
            flow_on_npu_verification=() if rejected is None else rejected.sentences,
            files={p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(staging.iterdir())},
            created_at=datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat(),
        )
        (staging / MANIFEST_NAME).write_text(manifest.to_json() + "\n")
        for old in out_folder.glob("*.rknn"):
            old.unlink()
        for path in staging.iterdir():
            path.replace(out_folder / path.name)
    return manifest


def _toolkit_version() -> str:
    from importlib.metadata import version

    return version("rknn-toolkit2")
