"""What a client asks for, checked once before any audio is made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..text.validation import InvalidText, clean_text

NOISE_RANGE: Final = (0.0, 2.0)
LENGTH_RANGE: Final = (0.1, 5.0)


class RequestError(ValueError):
    """A request the engine refuses; `code` is a stable machine-readable word, `message` for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def checked_text(text: str) -> str:
    """Client text made safe for espeak-ng (control characters → spaces); a lone surrogate is refused."""
    try:
        return clean_text(text)
    except InvalidText as e:
        raise RequestError("invalid_text", f"{e}; send valid Unicode") from None


@dataclass(frozen=True)
class SynthesisRequest:
    text: str
    voice: str | None = None
    speaker: str | int | None = None
    length_scale: float | None = None
    noise_scale: float | None = None
    noise_w: float | None = None
    seed: int | None = None
    """Noise seed: the same seed, text and options give the same audio, sample for sample."""
