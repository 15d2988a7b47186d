"""Subtitles from word timings: WebVTT (`.vtt`) or SRT (`.srt`), chosen by the file's extension.

A cue holds up to CUE_WORDS words, from the first word's start to the last one's end, so a line is short
enough to read while it is said; a cue never spans a pause longer than CUE_BREAK_S.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

from .synthesis.word_timings import WordTiming

CUE_WORDS: Final = 7
CUE_BREAK_S: Final = 0.6
FORMATS: Final = (".vtt", ".srt")


def check_subtitle_path(path: Path) -> None:
    """ValueError naming the extensions we write, for any other."""
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"unknown subtitle type {path.suffix!r}; use one of {list(FORMATS)}")


def write_subtitles(path: Path, words: Sequence[WordTiming]) -> None:
    check_subtitle_path(path)
    path.write_text(subtitles(words, vtt=path.suffix.lower() == ".vtt"), encoding="utf-8")


def subtitles(words: Sequence[WordTiming], *, vtt: bool) -> str:
    blocks = ["WEBVTT"] if vtt else []
    for number, cue in enumerate(_cues(words), start=1):
        span = f"{_stamp(cue[0].start, vtt)} --> {_stamp(cue[-1].end, vtt)}"
        text = " ".join(word.word for word in cue)
        blocks.append(f"{span}\n{text}" if vtt else f"{number}\n{span}\n{text}")
    return "\n\n".join(blocks) + "\n"


def _cues(words: Sequence[WordTiming]) -> list[list[WordTiming]]:
    cues: list[list[WordTiming]] = []
    for word in words:
        if cues and len(cues[-1]) < CUE_WORDS and word.start - cues[-1][-1].end <= CUE_BREAK_S:
            cues[-1].append(word)
        else:
            cues.append([word])
    return cues


def _stamp(seconds: float, vtt: bool) -> str:
    """HH:MM:SS.mmm (WebVTT) or HH:MM:SS,mmm (SRT)."""
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{'.' if vtt else ','}{millis:03d}"
