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


class SentenceBuffer:
    """Text arriving piece by piece (from a language model): hands out each sentence once it is complete,
    i.e. once its end and the whitespace after it have arrived."""

    def __init__(self) -> None:
        self._pending = ""

    def add(self, text: str) -> str:
        """Appends text; returns the complete sentences now available ("" if none)."""
        self._pending += text
        last_end = None
        for match in _BOUNDARY.finditer(self._pending):
            last_end = match.end()
        if last_end is None:
            return ""
        complete, self._pending = self._pending[:last_end], self._pending[last_end:]
        return complete

    def flush(self) -> str:
        """Everything not yet handed out."""
        rest, self._pending = self._pending, ""
        return rest
