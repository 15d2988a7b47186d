"""Word timings: when each word of a text is said, from the duration predictor's frames per phoneme id.

A unit of text (what one synthesis job phonemizes) becomes one or more encoder calls ("chunks"); the decoder
emits exactly `frames × samples_per_frame` samples for a chunk, chunk after chunk, so a word's time is the
frames before it in the stream. Times are exact for the audio made with the same seed, options and voice:
the durations depend on the seeded noise (`noise_w`).

A word runs from the first frame of its first sound to the last frame of its last sound; the last word of a
chunk also takes the chunk's end (its final pause), so the last word of the text ends with the audio. Which
sounds say which word: `text/words.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..text.phonemes import Phonemizer
from ..text.words import text_words, word_spans


@dataclass(frozen=True)
class WordTiming:
    word: str
    start: float
    """Seconds from the start of the request's audio."""
    end: float

    def as_json(self) -> dict[str, str | float]:
        return {"word": self.word, "start": round(self.start, 5), "end": round(self.end, 5)}


@dataclass(frozen=True)
class SpokenChunk:
    """One encoder call: its phonemes, its ids, and the ids each phoneme became (`encode_phonemes`)."""

    phonemes: list[str]
    ids: list[int]
    spans: list[range]


@dataclass(frozen=True)
class UnitWords:
    """The words of one unit of text, in frames from the unit's first frame."""

    words: tuple[str, ...]
    starts: tuple[int, ...]
    ends: tuple[int, ...]
    frames: int
    """The unit's length: the frames of all its chunks."""

    def placed(self, offset_samples: int, samples_per_frame: int, sample_rate: int) -> tuple[WordTiming, ...]:
        """In seconds, for a unit whose audio starts after `offset_samples` samples of the request's audio."""
        def seconds(frame: int) -> float:
            return (offset_samples + frame * samples_per_frame) / sample_rate
        return tuple(WordTiming(w, seconds(s), seconds(e)) for w, s, e in zip(self.words, self.starts, self.ends,
                                                                              strict=True))


def unit_words(phonemizer: Phonemizer, espeak_voice: str, text: str, chunks: Sequence[SpokenChunk],
               durations: Sequence[np.ndarray], chunk_frames: Sequence[int]) -> UnitWords:
    """The words of `text` (one unit) placed on its chunks' frames (blocking: espeak-ng says each word alone).
    `durations`: frames per id of each chunk; `chunk_frames`: each chunk's length as decoded."""
    words = text_words(text)
    alone = [[p for sentence in phonemizer.sentences(word, espeak_voice) for p in [*sentence, " "]]
             for word in words]
    phonemes = [p for chunk in chunks for p in chunk.phonemes]
    # Each phoneme's frames [start, end) from the unit's start, and the chunk it is in.
    starts, ends, chunk_of = [], [], []
    chunk_ends, offset = [], 0
    for index, (chunk, frames_per_id, length) in enumerate(zip(chunks, durations, chunk_frames, strict=True)):
        before = np.concatenate([[0], np.cumsum(frames_per_id)])
        for span in chunk.spans:
            starts.append(offset + int(before[span.start]))
            ends.append(offset + int(before[span.stop]))
            chunk_of.append(index)
        offset += length
        chunk_ends.append(offset)
    spans = word_spans(alone, phonemes)
    word_starts, word_ends = [], []
    for i, span in enumerate(spans):
        if span:
            start, end = starts[span.start], ends[span.stop - 1]
            chunk = chunk_of[span.stop - 1]
            following = spans[i + 1].start if i + 1 < len(spans) else len(phonemes)
            if following >= len(phonemes) or chunk_of[following] > chunk:
                end = chunk_ends[chunk]  # its chunk's final pause
        else:
            start = end = starts[span.start] if span.start < len(phonemes) else offset
        word_starts.append(start)
        word_ends.append(end)
    if word_ends and spans[-1]:
        word_ends[-1] = offset
    return UnitWords(tuple(words), tuple(word_starts), tuple(word_ends), offset)
