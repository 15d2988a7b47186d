"""Split text into pieces at sentence ends before phonemizing, so the first sentence of a long text is
phonemized and spoken without waiting for the rest (espeak-ng then splits each piece into its sentences)."""

from __future__ import annotations

import re
from collections.abc import Iterator

# A sentence end: terminal punctuation (Latin, CJK, Devanagari, Arabic), closing quotes/brackets, then space;
# or a blank line / line break.
_BOUNDARY = re.compile(r"(?<=[.!?;。！？؟।])[\"'”’)\]]*\s+|\n\s*")


def text_pieces(text: str) -> Iterator[str]:
    for piece in _BOUNDARY.split(text):
        piece = piece.strip()
        if piece:
            yield piece
