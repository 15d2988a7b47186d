"""The NPU voice bundle's manifest (`models/rknn/NAME/manifest.json`): written by `conversion`, read by the
daemon, parsed here and nowhere else."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

MANIFEST_NAME: Final = "manifest.json"
FORMAT_VERSION: Final = 1


class ManifestError(ValueError):
    """The manifest is missing, unreadable or inconsistent; the message names the key or file."""


@dataclass(frozen=True)
class CompiledStage:
    file: str
    """The `.rknn` file, relative to the bundle folder."""
    window: int
    """Total frames of the model's one input shape (useful frames + 2 x context)."""
    context: int
    """Frames of context on each side, cropped after each run."""
    inputs: tuple[str, ...]
    """ONNX tensor names of the model's inputs, in the order the runtime takes them."""
    framed_inputs: tuple[str, ...]
    input_shapes: Mapping[str, tuple[int, ...]]
    """The compiled model's one shape per input, e.g. [1, 192, 48]."""
    snr_db: float
    """Simulator output against onnxruntime on the same windows."""


@dataclass(frozen=True)
class VerifiedSentence:
    """One verification sentence as the converter measured it: the windowed chain in the simulator against
    onnxruntime's whole-utterance audio."""

    text: str
    speaker_id: int | None
    frames: int
    snr_db: float
    mcd_db: float
    """Mel-cepstral distortion (dB, 24 coefficients); 0 is identical."""


@dataclass(frozen=True)
class BundleManifest:
    voice: str
    target: str
    """SoC the models were compiled for, e.g. 'rk3588'."""
    toolkit_version: str
    source_onnx_sha256: str
    sample_rate: int
    flow: CompiledStage | None
    """None: the flow stays on the CPU (its fp16 NPU build failed the verification gate)."""
    decoder: CompiledStage
    pipeline_snr_db: float
    """The windowed NPU chain in the simulator against onnxruntime's whole-utterance audio, worst sentence."""
    files: Mapping[str, str]
    """sha256 of every file in the bundle but the manifest."""
    created_at: str
    flow_on_npu_snr_db: float | None = None
    """What the chain measured with the flow on the NPU too, when that failed the gate (kept for the record)."""
    pipeline_mcd_db: float | None = None
    """Worst sentence's mel-cepstral distortion of the shipped chain (None in bundles made before it was measured)."""
    flow_on_npu_mcd_db: float | None = None
    verification: tuple[VerifiedSentence, ...] = ()
    """The shipped chain, sentence by sentence."""
    flow_on_npu_verification: tuple[VerifiedSentence, ...] = ()
    """The rejected chain with the flow on the NPU, sentence by sentence."""
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @staticmethod
    def from_dict(raw: Mapping[str, Any]) -> BundleManifest:
        try:
            version = int(raw.get("format_version", 0))
            if version != FORMAT_VERSION:
                raise ManifestError(f"format_version {version} is not {FORMAT_VERSION}; reconvert the voice")
            return BundleManifest(
                voice=str(raw["voice"]),
                target=str(raw["target"]),
                toolkit_version=str(raw["toolkit_version"]),
                source_onnx_sha256=str(raw["source_onnx_sha256"]),
                sample_rate=int(raw["sample_rate"]),
                flow=_stage(raw["flow"], "flow") if raw.get("flow") else None,
                decoder=_stage(raw["decoder"], "decoder"),
                pipeline_snr_db=float(raw["pipeline_snr_db"]),
                files={str(k): str(v) for k, v in raw["files"].items()},
                created_at=str(raw["created_at"]),
                flow_on_npu_snr_db=_optional_float(raw, "flow_on_npu_snr_db"),
                pipeline_mcd_db=_optional_float(raw, "pipeline_mcd_db"),
                flow_on_npu_mcd_db=_optional_float(raw, "flow_on_npu_mcd_db"),
                verification=_sentences(raw.get("verification") or ()),
                flow_on_npu_verification=_sentences(raw.get("flow_on_npu_verification") or ()),
            )
        except KeyError as e:
            raise ManifestError(f"missing key {e.args[0]!r}") from e
        except (TypeError, ValueError, AttributeError) as e:
            if isinstance(e, ManifestError):
                raise
            raise ManifestError(f"malformed manifest: {e}") from e

    @staticmethod
    def load(folder: Path) -> BundleManifest:
        path = folder / MANIFEST_NAME
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ManifestError(f"{path}: {e}") from e
        try:
            return BundleManifest.from_dict(raw)
        except ManifestError as e:
            raise ManifestError(f"{path}: {e}") from e


def _optional_float(raw: Mapping[str, Any], key: str) -> float | None:
    return None if raw.get(key) is None else float(raw[key])


def _sentences(raw: Any) -> tuple[VerifiedSentence, ...]:
    return tuple(
        VerifiedSentence(text=str(s["text"]), speaker_id=None if s.get("speaker_id") is None else int(s["speaker_id"]),
                         frames=int(s["frames"]), snr_db=float(s["snr_db"]), mcd_db=float(s["mcd_db"]))
        for s in raw
    )


def _stage(raw: Mapping[str, Any], name: str) -> CompiledStage:
    try:
        stage = CompiledStage(
            file=str(raw["file"]),
            window=int(raw["window"]),
            context=int(raw["context"]),
            inputs=tuple(str(i) for i in raw["inputs"]),
            framed_inputs=tuple(str(i) for i in raw["framed_inputs"]),
            input_shapes={str(k): tuple(int(d) for d in v) for k, v in raw["input_shapes"].items()},
            snr_db=float(raw["snr_db"]),
        )
    except KeyError as e:
        raise ManifestError(f"{name}: missing key {e.args[0]!r}") from e
    if stage.window <= 2 * stage.context:
        raise ManifestError(f"{name}: window {stage.window} leaves no useful frames beside 2x{stage.context}")
    return stage
