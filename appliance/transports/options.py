"""Reading a client's synthesis options (JSON body, query string or WebSocket message) into a request."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

from ..audio.formats import AudioFormat
from ..synthesis.request import RequestError, SynthesisRequest

OPTION_KEYS = ("voice", "speaker", "length_scale", "noise_scale", "noise_w", "format", "seed")
REQUEST_KEYS = ("text", *OPTION_KEYS)


SHOWN_CHARS = 40
"""How much of a client's string an error message repeats back."""


def shortened(value: str) -> str:
    """A client's string as an error message shows it: cut after SHOWN_CHARS characters."""
    return value if len(value) <= SHOWN_CHARS else value[:SHOWN_CHARS] + "…"


def refuse_unknown_keys(raw: Mapping[str, Any], known: Collection[str]) -> None:
    """A key we do not know is refused by name, rather than silently ignored (`"speed": 2` is not spoken fast)."""
    for key in raw:
        if key not in known:
            raise RequestError("unknown_option", f"unknown option {shortened(key)!r}; known: {', '.join(known)}")


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
        if strings and isinstance(seed, str) and seed.isascii() and seed.isdigit() and len(seed) <= 19:
            seed = int(seed)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise RequestError("invalid_option", "seed must be a whole number from 0 to 2^63-1")
        options["seed"] = seed
    fmt = raw.get("format") or default_format
    try:
        if not isinstance(fmt, str):
            raise ValueError(fmt)
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
    """A finite float; strings only from a query string. Huge integers and inf/nan are refused by name."""
    if isinstance(value, bool) or not isinstance(value, int | float | str) or (isinstance(value, str) and not strings):
        raise RequestError("invalid_option", f"{key} must be a number")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise RequestError("invalid_option", f"{key} must be a number") from None
    if not math.isfinite(number):
        raise RequestError("invalid_option", f"{key} must be a finite number")
    return number
