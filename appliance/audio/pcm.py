"""Raw PCM output: float samples to signed 16-bit little-endian bytes."""

from __future__ import annotations

from typing import Final

import numpy as np

S16_FULL_SCALE: Final = 32767
"""Scale for ±1.0; 32767 (not 32768) so that +1.0 and -1.0 both map without overflow, symmetrically."""


def to_s16le(samples: np.ndarray) -> bytes:
    """Converts float mono samples in [-1, 1] to s16le bytes: clipped, then rounded to nearest.

    NaN becomes silence: one bad value from a model must not turn into a full-scale click.
    """
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected mono samples (1-D array), got shape {x.shape}")
    x = np.clip(np.nan_to_num(x, nan=0.0), -1.0, 1.0)
    return np.rint(x * S16_FULL_SCALE).astype("<i2").tobytes()


def pcm_content_type(sample_rate: int) -> str:
    return f"audio/L16; rate={sample_rate}; channels=1"


class PcmEncoder:
    """Headerless s16le mono; the sample rate travels only in the content type.

    Note: RFC 2586 defines audio/L16 as big-endian; this stream is little-endian (what the house
    clients and most tools expect), so clients must not byte-swap just because of the media type.
    """

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.content_type = pcm_content_type(sample_rate)
        self._finished = False

    def encode(self, samples: np.ndarray) -> bytes:
        if self._finished:
            raise RuntimeError("PCM encoder already finished")
        return to_s16le(samples)

    def finish(self) -> bytes:
        self._finished = True
        return b""

    def close(self) -> None:
        self._finished = True
