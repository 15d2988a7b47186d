"""The Piper voice JSON (`NAME.onnx.json`): parsed here and nowhere else."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

DEFAULT_NOISE_SCALE: Final = 0.667
DEFAULT_LENGTH_SCALE: Final = 1.0
DEFAULT_NOISE_W: Final = 0.8


class VoiceConfigError(ValueError):
    """The voice JSON is not a Piper voice configuration; the message names the bad key."""


@dataclass(frozen=True)
class VoiceConfig:
    sample_rate: int
    """Output sample rate in Hz."""
    espeak_voice: str
    """espeak-ng voice used for phonemization (e.g. 'en-us')."""
    phoneme_id_map: Mapping[str, Sequence[int]]
    """Phoneme (one codepoint or cluster) to model input ids."""
    num_speakers: int = 1
    speaker_id_map: Mapping[str, int] | None = None
    """Speaker name to `sid` for multi-speaker voices."""
    language: str = ""
    """Language code such as 'en_US'."""
    noise_scale: float = DEFAULT_NOISE_SCALE
    length_scale: float = DEFAULT_LENGTH_SCALE
    noise_w: float = DEFAULT_NOISE_W

    @staticmethod
    def from_dict(raw: Mapping[str, Any]) -> VoiceConfig:
        try:
            phoneme_type = raw.get("phoneme_type", "espeak")
            if phoneme_type != "espeak":
                raise VoiceConfigError(f"phoneme_type: only 'espeak' voices are supported, got {phoneme_type!r}")
            inference = raw.get("inference", {})
            id_map = raw["phoneme_id_map"]
            if not isinstance(id_map, Mapping) or not id_map:
                raise VoiceConfigError("phoneme_id_map: expected a non-empty object")
            speaker_map = raw.get("speaker_id_map") or None
            return VoiceConfig(
                sample_rate=int(raw["audio"]["sample_rate"]),
                espeak_voice=str(raw["espeak"]["voice"]),
                phoneme_id_map={str(k): [int(i) for i in v] for k, v in id_map.items()},
                num_speakers=int(raw.get("num_speakers", 1)),
                speaker_id_map={str(k): int(v) for k, v in speaker_map.items()} if speaker_map else None,
                language=str(raw.get("language", {}).get("code", "") or raw["espeak"]["voice"]),
                noise_scale=float(inference.get("noise_scale", DEFAULT_NOISE_SCALE)),
                length_scale=float(inference.get("length_scale", DEFAULT_LENGTH_SCALE)),
                noise_w=float(inference.get("noise_w", DEFAULT_NOISE_W)),
            )
        except KeyError as e:
            raise VoiceConfigError(f"missing key {e.args[0]!r}") from e
        except (TypeError, ValueError, AttributeError) as e:
            if isinstance(e, VoiceConfigError):
                raise
            raise VoiceConfigError(f"malformed voice configuration: {e}") from e

    @staticmethod
    def load(path: Path) -> VoiceConfig:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise VoiceConfigError(f"{path}: cannot read voice JSON: {e}") from e
        try:
            return VoiceConfig.from_dict(raw)
        except VoiceConfigError as e:
            raise VoiceConfigError(f"{path}: {e}") from e

    @property
    def speaker_names(self) -> list[str]:
        """The speakers' names in id order (empty for a single-speaker voice)."""
        return sorted(self.speaker_id_map, key=self.speaker_id_map.__getitem__) if self.speaker_id_map else []

    def speaker_id(self, speaker: str | int | None) -> int | None:
        """Resolve a speaker given by name or id; None for single-speaker voices. Raises KeyError if unknown."""
        shown = _shown(speaker)
        if self.num_speakers <= 1:
            if speaker in (None, 0, "0", ""):
                return None
            raise KeyError(f"this voice has a single speaker, {shown} is not one")
        if speaker is None or speaker == "":
            return 0
        # ASCII digits only: "²".isdigit() is true, but int("²") fails.
        if isinstance(speaker, int) or (isinstance(speaker, str) and speaker.isascii() and speaker.isdigit()):
            sid = int(speaker) if isinstance(speaker, int) or len(speaker) <= 9 else -1
            if 0 <= sid < self.num_speakers:
                return sid
            raise KeyError(f"speaker id {shown} is out of range 0..{self.num_speakers - 1}")
        if self.speaker_id_map and speaker in self.speaker_id_map:
            return self.speaker_id_map[speaker]
        raise KeyError(f"unknown speaker {shown}")


def _shown(speaker: str | int | None) -> str:
    """A speaker as a client gave it, cut short for messages (a 4,000-digit id is not repeated back)."""
    text = str(speaker) if not isinstance(speaker, int) or abs(speaker) < 10**12 else "(a huge number)"
    return repr(text if len(text) <= 40 else text[:40] + "…")
