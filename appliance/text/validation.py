"""Text a client sent, made safe for espeak-ng before any audio header leaves.

- A lone surrogate (U+D800–U+DFFF on its own, e.g. JSON "\\ud800") cannot be encoded as UTF-8 for espeak-ng:
  the text is refused, naming the character's position (0-based), since there is no sensible way to say it.
- C0/C1 control characters other than tab, line feed and carriage return are replaced by a space: espeak-ng
  stops reading at a NUL (the rest of the text would be silently dropped) and other controls mean nothing to
  it; a space keeps the words on both sides apart.
"""

from __future__ import annotations

import re

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


class InvalidText(ValueError):
    def __init__(self, position: int, char: str) -> None:
        super().__init__(f"text has a lone surrogate U+{ord(char):04X} at character {position}")
        self.position = position
        self.char = char


def clean_text(text: str) -> str:
    """`text` with control characters replaced by spaces; raises InvalidText for a lone surrogate."""
    surrogate = _LONE_SURROGATE.search(text)
    if surrogate is not None:
        raise InvalidText(surrogate.start(), surrogate.group())
    return _CONTROL.sub(" ", text)
