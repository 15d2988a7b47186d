"""Split text into pieces at sentence ends before phonemizing, so the first sentence of a long text is
phonemized and spoken without waiting for the rest (espeak-ng then splits each piece into its sentences).
A sentence longer than a synthesis unit is cut further (`units.py`), so no piece is unbounded."""

from __future__ import annotations

import re
from collections.abc import Iterator

from .units import MAX_UNIT_CHARS, bounded_units, cut_index

# A sentence end: terminal punctuation (Latin, CJK, Devanagari, Arabic), closing quotes/brackets, then space;
# or a blank line / line break. The closers belong to the sentence they close.
_BOUNDARY = re.compile(r"(?<=[.!?;。！？؟।])(?P<closers>[\"'”’)\]]*)\s+|\n\s*")


def text_pieces(text: str) -> Iterator[str]:
    start = 0
    for match in _BOUNDARY.finditer(text):
        yield from _stripped(text[start:match.start() + len(match.group("closers") or "")])
        start = match.end()
    yield from _stripped(text[start:])


def _stripped(piece: str) -> Iterator[str]:
    piece = piece.strip()
    if piece:
        yield piece


def text_units(text: str, max_chars: int = MAX_UNIT_CHARS) -> Iterator[str]:
    """Sentences of `text`, each cut into units of at most `max_chars` characters."""
    for piece in text_pieces(text):
        yield from bounded_units(piece, max_chars)


class SentenceBuffer:
    """Text arriving piece by piece (from a language model): hands out each sentence once it is complete,
    i.e. once its end and the whitespace after it have arrived; and, for text without sentence ends, a unit's
    worth of whole words (or clauses) once more than `max_chars` characters are pending, so an unpunctuated
    stream starts speaking without a flush and never grows one unbounded sentence."""

    def __init__(self, max_chars: int = MAX_UNIT_CHARS) -> None:
        self._pending = ""
        self._max_chars = max_chars

    def add(self, text: str) -> str:
        """Appends text; returns the text now ready to speak ("" if none), unchanged (sentence and unit ends
        are found again by `text_units`)."""
        self._pending += text
        ready = ""
        last_end = None
        for match in _BOUNDARY.finditer(self._pending):
            last_end = match.end()
        if last_end is not None:
            ready, self._pending = self._pending[:last_end], self._pending[last_end:]
        while len(self._pending.strip()) > self._max_chars:
            # The word still arriving stays pending: the cut is at the last clause or word boundary.
            start = len(self._pending) - len(self._pending.lstrip())
            cut = start + cut_index(self._pending[start:], self._max_chars)
            ready, self._pending = ready + self._pending[:cut], self._pending[cut:]
        return ready

    def flush(self) -> str:
        """Everything not yet handed out."""
        rest, self._pending = self._pending, ""
        return rest
