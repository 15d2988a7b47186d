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
    ids: list[int] = [*id_map[BOS], *id_map[PAD]]
    for phoneme in phonemes:
        mapped = id_map.get(phoneme)
        if mapped is None:
            # Piper skips phonemes its voice was not trained on; so do we, to produce the same audio.
            log.debug("phoneme %r (U+%04X %s) is not in the voice's map; skipped", phoneme, ord(phoneme[0]),
                      unicodedata.name(phoneme[0], "?"))
            continue
        ids.extend(mapped)
        ids.extend(id_map[PAD])
    ids.extend(id_map[EOS])
    return ids
