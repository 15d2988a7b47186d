"""Split voices cached on disk, keyed by the source model's sha256: splitting takes seconds, loading less."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

import onnx

from ..file_digest import file_sha256
from .graph_cut import LiftedNoise
from .piper_split import SplitVoice, StageGraph, split_piper_voice

FORMAT_VERSION = 2
"""2: the prelude also gives the durations."""


def load_split_voice(onnx_path: Path, cache_folder: Path | None, sha256: str | None = None) -> SplitVoice:
    """Split `onnx_path`, or load the split from `cache_folder` if it was made before from the same bytes.
    `sha256`: the model's digest, when the caller has it already."""
    if cache_folder is None:
        return split_piper_voice(onnx.load(str(onnx_path)))
    folder = cache_folder / f"{(sha256 or file_sha256(onnx_path))[:32]}-v{FORMAT_VERSION}"
    index_path = folder / "stages.json"
    if index_path.exists():
        try:
            return _read(folder, json.loads(index_path.read_text()))
        except (OSError, ValueError, KeyError, onnx.onnx_cpp2py_export.checker.ValidationError):
            pass  # a damaged cache is rebuilt below
    split = split_piper_voice(onnx.load(str(onnx_path)))
    _write(folder, split)
    return split


def _write(folder: Path, split: SplitVoice) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".split-"))
    stages = []
    for stage in split.stages:
        onnx.save(stage.model, str(staging / f"{stage.name}.onnx"))
        stages.append({k: v for k, v in asdict(stage).items() if k != "model"})
    index = {
        "stages": stages,
        "prelude": [s.name for s in split.prelude],
        "noises": [asdict(n) for n in split.noises],
        "model_inputs": list(split.model_inputs),
        "durations": split.durations,
    }
    (staging / "stages.json").write_text(json.dumps(index, indent=1))
    try:
        os.replace(staging, folder)  # atomic: another process may be writing the same split
    except OSError:
        for f in staging.iterdir():
            f.unlink()
        staging.rmdir()


def _read(folder: Path, index: dict) -> SplitVoice:
    stages = {
        s["name"]: StageGraph(
            name=s["name"],
            model=onnx.load(str(folder / f"{s['name']}.onnx")),
            inputs=tuple(s["inputs"]),
            outputs=tuple(s["outputs"]),
            framed_inputs=tuple(s["framed_inputs"]),
        )
        for s in index["stages"]
    }
    return SplitVoice(
        prelude=tuple(stages[n] for n in index["prelude"]),
        flow=stages["flow"],
        decoder=stages["decoder"],
        noises=tuple(LiftedNoise(**n) for n in index["noises"]),
        model_inputs=tuple(index["model_inputs"]),
        durations=index["durations"],
    )
