"""Phonemes to model input ids, exactly as Piper encodes them: BOS, PAD after every phoneme, EOS."""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Final

BOS: Final = "^"
EOS: Final = "$"
PAD: Final = "_"

log = logging.getLogger(__name__)


def phonemes_to_ids(phonemes: Sequence[str], id_map: Mapping[str, Sequence[int]]) -> list[int]:
    return encode_phonemes(phonemes, id_map)[0]


def encode_phonemes(phonemes: Sequence[str], id_map: Mapping[str, Sequence[int]]
                    ) -> tuple[list[int], list[range]]:
    """The ids, and for each phoneme the ids it became (its own and the PAD after it; an empty range at its
    place for a phoneme the voice skips): where its duration is in the duration predictor's output."""
    ids: list[int] = [*id_map[BOS], *id_map[PAD]]
    spans: list[range] = []
    for phoneme in phonemes:
        mapped = id_map.get(phoneme)
        start = len(ids)
        if mapped is None:
            # Piper skips phonemes its voice was not trained on; so do we, to produce the same audio.
            log.debug("phoneme %r (U+%04X %s) is not in the voice's map; skipped", phoneme, ord(phoneme[0]),
                      unicodedata.name(phoneme[0], "?"))
        else:
            ids.extend(mapped)
            ids.extend(id_map[PAD])
        spans.append(range(start, len(ids)))
    ids.extend(id_map[EOS])
    return ids, spans
