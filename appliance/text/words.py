"""Which phonemes say which word of a text: how word timings find their words.

espeak-ng does not keep the text's words: it expands some ("123" → "one hundred and twenty three", "$5" →
"five dollars", in its own order), merges others ("of the" → one phoneme word "ʌvðə"), drops some ("-") and
splits sentences where the text has none ("Dr. Smith"). So the words reported are the text's own words (split at
whitespace, punctuation at their ends stripped, tokens of punctuation only dropped), and each is found in the
sentence's phonemes by aligning the phonemes of each word said alone with the phonemes of the whole text
(difflib, on sounds only: no spaces, no punctuation). Sounds the alignment cannot place are shared out evenly
between the words around them that found none; with no match at all, the sounds are spread evenly over all the
words. The result is always in text order, never overlapping, and one span per word (possibly empty).
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Sequence


def text_words(text: str) -> list[str]:
    """The words of `text` as reported: whitespace-separated, punctuation at either end stripped."""
    words = []
    for token in text.split():
        start, end = 0, len(token)
        while start < end and _is_punctuation(token[start]):
            start += 1
        while end > start and _is_punctuation(token[end - 1]):
            end -= 1
        if start < end:
            words.append(token[start:end])
    return words


def is_sound(phoneme: str) -> bool:
    """A phoneme that is part of a word (not the space between words, not a pause for punctuation)."""
    return not phoneme.isspace() and not _is_punctuation(phoneme[0])


def word_spans(word_phonemes: Sequence[Sequence[str]], phonemes: Sequence[str]) -> list[range]:
    """For each word (its phonemes when said alone), the indices into `phonemes` (the whole text's) of the
    sounds that say it: `range(first, last + 1)`, or an empty range at its place when none do."""
    sounds = [i for i, p in enumerate(phonemes) if is_sound(p)]
    reference: list[str] = []
    said_by: list[int] = []
    for word, alone in enumerate(word_phonemes):
        for phoneme in alone:
            if is_sound(phoneme):
                reference.append(phoneme)
                said_by.append(word)
    target = [phonemes[i] for i in sounds]
    owners: list[int | None] = [None] * len(target)
    matcher = difflib.SequenceMatcher(None, reference, target, autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            owners[block.b + k] = said_by[block.a + k]
    _share_unplaced(owners, len(word_phonemes))
    spans: list[range] = []
    position = 0  # sound index where the next word starts at the earliest
    for word in range(len(word_phonemes)):
        mine = [k for k in range(position, len(target)) if owners[k] == word]
        if mine:
            spans.append(range(sounds[mine[0]], sounds[mine[-1]] + 1))
            position = mine[-1] + 1
        else:
            at = sounds[position] if position < len(sounds) else len(phonemes)
            spans.append(range(at, at))
    return spans


def _share_unplaced(owners: list[int | None], words: int) -> None:
    """Gives each run of unplaced sounds to the words between the placed sounds around it that have none
    (evenly), or else to the word before it (or after it, at the start). Owners stay in text order."""
    k = 0
    while k < len(owners):
        if owners[k] is not None:
            k += 1
            continue
        end = k
        while end < len(owners) and owners[end] is None:
            end += 1
        before = owners[k - 1] if k > 0 else None
        after = owners[end] if end < len(owners) else None
        first = 0 if before is None else before + 1
        last = words - 1 if after is None else after - 1
        if first <= last:
            count, length = last - first + 1, end - k
            for j in range(length):
                owners[k + j] = first + j * count // length
        else:
            fallback = before if before is not None else after
            for j in range(k, end):
                owners[j] = fallback
        k = end


def _is_punctuation(char: str) -> bool:
    return unicodedata.category(char).startswith("P")
