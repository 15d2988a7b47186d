"""Text to phonemes, sentence by sentence, with espeak-ng through piper-phonemize."""

from __future__ import annotations

import threading

import piper_phonemize


class Phonemizer:
    """espeak-ng keeps global state in the C library, so calls are serialised by one lock per phonemizer;
    the daemon holds a single instance."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def sentences(self, text: str, espeak_voice: str) -> list[list[str]]:
        """Phonemes of each sentence in `text` (espeak-ng splits sentences at its own punctuation rules)."""
        with self._lock:
            sentences = piper_phonemize.phonemize_espeak(text, espeak_voice)
        return [s for s in sentences if s]
