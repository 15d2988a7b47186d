"""WAV output: a streaming encoder with an open-ended header, and a complete-file helper."""

from __future__ import annotations

import struct
from typing import Final

import numpy as np

from appliance.audio.pcm import to_s16le

UNKNOWN_SIZE: Final = 0xFFFFFFFF
"""RIFF and data chunk size sent when the length is not yet known: the header leaves before the audio
exists. This is what streaming servers (ffmpeg to a pipe, Icecast-style endpoints) do; browsers, ffmpeg,
sox and Python's `wave` play such a stream until the connection ends."""

HEADER_BYTES: Final = 44
_BYTES_PER_SAMPLE: Final = 2


def wav_header(sample_rate: int, data_bytes: int | None = None) -> bytes:
    """A 44-byte header for 16-bit mono PCM; `data_bytes=None` means "unknown, streaming"."""
    if data_bytes is None:
        riff_size = data_size = UNKNOWN_SIZE
    else:
        if not 0 <= data_bytes <= UNKNOWN_SIZE - (HEADER_BYTES - 8):
            raise ValueError(f"WAV data size out of range: {data_bytes}")
        data_size = data_bytes
        riff_size = HEADER_BYTES - 8 + data_bytes
    byte_rate = sample_rate * _BYTES_PER_SAMPLE
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", riff_size, b"WAVE",
        b"fmt ", 16, 1, 1, sample_rate, byte_rate, _BYTES_PER_SAMPLE, 16,
        b"data", data_size,
    )  # fmt: skip


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """A complete WAV file with correct sizes, for offline output such as `say -o out.wav`."""
    pcm = to_s16le(samples)
    return wav_header(sample_rate, len(pcm)) + pcm


WAV_CONTENT_TYPE = "audio/wav"


class WavStreamEncoder:
    """Header first (sizes set to `UNKNOWN_SIZE`), then s16le mono as it arrives."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.content_type = WAV_CONTENT_TYPE
        self._header_sent = False
        self._finished = False

    def encode(self, samples: np.ndarray) -> bytes:
        if self._finished:
            raise RuntimeError("WAV encoder already finished")
        return self._take_header() + to_s16le(samples)

    def finish(self) -> bytes:
        # Even an utterance with no audio yields a playable (empty) WAV stream.
        header = b"" if self._finished else self._take_header()
        self._finished = True
        return header

    def close(self) -> None:
        self._finished = True

    def _take_header(self) -> bytes:
        if self._header_sent:
            return b""
        self._header_sent = True
        return wav_header(self.sample_rate)
