"""Reading a client's synthesis options (JSON body, query string or WebSocket message) into a request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..audio.formats import AudioFormat
from ..synthesis.request import RequestError, SynthesisRequest

OPTION_KEYS = ("voice", "speaker", "length_scale", "noise_scale", "noise_w", "format", "seed")


def parse_options(raw: Mapping[str, Any], default_format: str, *, strings: bool = False) -> tuple[dict, AudioFormat]:
    """Typed options from JSON (or, with `strings`, from a query string); RequestError names the bad one."""
    options: dict[str, Any] = {}
    for key in ("length_scale", "noise_scale", "noise_w"):
        if raw.get(key) is not None:
            options[key] = _number(key, raw[key], strings)
    if raw.get("voice") is not None:
        if not isinstance(raw["voice"], str):
            raise RequestError("invalid_option", "voice must be a string")
        options["voice"] = raw["voice"]
    if raw.get("speaker") is not None:
        speaker = raw["speaker"]
        if isinstance(speaker, bool) or not isinstance(speaker, str | int):
            raise RequestError("invalid_option", "speaker must be a name or an id")
        options["speaker"] = speaker
    if raw.get("seed") is not None:
        seed = raw["seed"]
        if strings and isinstance(seed, str) and seed.isdigit():
            seed = int(seed)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise RequestError("invalid_option", "seed must be a whole number from 0 to 2^63-1")
        options["seed"] = seed
    fmt = raw.get("format") or default_format
    try:
        audio_format = AudioFormat(fmt)
    except ValueError:
        raise RequestError("invalid_option", f"format must be one of {[f.value for f in AudioFormat]}") from None
    return options, audio_format


def parse_request(raw: Mapping[str, Any], default_format: str, *, strings: bool = False
                  ) -> tuple[SynthesisRequest, AudioFormat]:
    text = raw.get("text")
    if not isinstance(text, str):
        raise RequestError("invalid_text", "text is required and must be a string")
    options, audio_format = parse_options(raw, default_format, strings=strings)
    return SynthesisRequest(text=text, **options), audio_format


def _number(key: str, value: Any, strings: bool) -> float:
    if strings and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError("invalid_option", f"{key} must be a number")
    return float(value)
