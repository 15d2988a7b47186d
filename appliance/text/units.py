"""Synthesis units of bounded size: whatever a client sends, no espeak-ng call and no encoder call is large.

Why: espeak-ng (piper-phonemize 1.1.0) segfaults on a single word of ≈ 3,200 characters, and the text
encoder's memory and time grow with the square of its input (onnxruntime keeps the memory it took). Measured on
the CI machine (x86_64, joe-medium, one encoder call incl. the whole flow, fresh process each; peak RSS above the
loaded daemon's):

    unpunctuated chars    100     200     300     400     600     800   1,000
    phoneme ids           273     537     801   1,073   1,601   2,135   2,671   ("la la la …")
    peak RSS growth      5 MB   23 MB   53 MB   97 MB  210 MB  363 MB  528 MB
    encode time        0.4 s   0.7 s   1.2 s   1.8 s   3.4 s   5.4 s   7.7 s

Numbers expand: "1234567 " gives ~10 phonemes per character (100 characters → 1,929 ids, +361 MB), so the
phoneme sequence is capped on its own. The caps (250 characters ≈ 290 phonemes of ordinary words; at most 603
ids) keep one encoder call between the 537- and 801-id columns, ~25–50 MB and ~1 s of encoding (the delay
before a long unpunctuated text starts speaking), while leaving ordinary sentences whole. A first choice of
300 characters / 400 phonemes let 500 characters of digits peak 152 MB above a short sentence over a whole
synthesis (`benchmarks/memory.py`); 300 phonemes brought that to 94 MB.

A piece of text longer than the cap is cut at the last clause punctuation within the cap (a natural pause),
else at the last whitespace (between words), else hard (a "word" longer than the cap). Nothing is appended at
a cut: a unit cut between words ends without punctuation, exactly as an unpunctuated text does. Phonemes are cut
the same way at espeak-ng's punctuation and word-separating space phonemes.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator, Sequence
from typing import Final

MAX_UNIT_CHARS: Final = 250
"""Characters per espeak-ng call (its crash threshold is ≈ 3,200 for one word)."""
MAX_UNIT_PHONEMES: Final = 300
"""Phonemes per encoder call; Piper maps each phoneme to one id plus a pad, so ≤ 2·300 + 3 = 603 ids."""

# Punctuation after which a pause sounds natural when followed by a space (Latin, Arabic), or even without one
# (CJK, which does not separate words by spaces).
CLAUSE_ENDS: Final = frozenset(",;:—–-…!?.،؛")
CLAUSE_ENDS_NO_SPACE: Final = frozenset("，、；：。！？")
CLOSERS: Final = frozenset("\"'”’»)]}」』）")
"""Closing quotes and brackets that may stand between clause punctuation and the space after it."""


def cut_index(items: Sequence[str], limit: int) -> int:
    """Where the first unit of `items` (a str, or a list of one-character phonemes, longer than `limit`) ends:
    an index in [1, limit]. The caller strips whitespace at both sides of the cut."""
    clause = space = 0
    for i in range(1, min(len(items), limit + 1)):  # items[limit] may be the space after a word that fits
        before = items[i - 1]
        if items[i].isspace():
            space = i
            if _ends_clause(items, i):
                clause = i
        elif before in CLAUSE_ENDS_NO_SPACE:
            clause = i
    if clause or space:
        return clause or space
    cut = limit
    while cut > 1 and unicodedata.combining(items[cut][0]):  # keep an accent with its letter
        cut -= 1
    return cut


def bounded_units(piece: str, max_chars: int = MAX_UNIT_CHARS) -> Iterator[str]:
    """`piece` (one sentence, stripped) in units of at most `max_chars` characters."""
    while len(piece) > max_chars:
        cut = cut_index(piece, max_chars)
        head, piece = piece[:cut].rstrip(), piece[cut:].lstrip()
        if head:
            yield head
    if piece:
        yield piece


def phoneme_units(phonemes: list[str], max_phonemes: int = MAX_UNIT_PHONEMES) -> list[list[str]]:
    """One sentence's phonemes in runs of at most `max_phonemes`, cut at clause punctuation or word spaces."""
    units = []
    while len(phonemes) > max_phonemes:
        cut = cut_index(phonemes, max_phonemes)
        head, phonemes = _strip(phonemes[:cut]), _strip(phonemes[cut:])
        if head:
            units.append(head)
    if phonemes:
        units.append(phonemes)
    return units


def _ends_clause(items: Sequence[str], space_at: int) -> bool:
    i = space_at - 1
    while i > 0 and items[i] in CLOSERS:
        i -= 1
    return items[i] in CLAUSE_ENDS or items[i] in CLAUSE_ENDS_NO_SPACE


def _strip(phonemes: list[str]) -> list[str]:
    start, end = 0, len(phonemes)
    while start < end and phonemes[start].isspace():
        start += 1
    while end > start and phonemes[end - 1].isspace():
        end -= 1
    return phonemes[start:end]
