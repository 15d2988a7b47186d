"""Any encoder fed at another sample rate: OpenAI's `pcm` is 24 kHz whatever the voice's rate."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from appliance.audio.pyav import Resampler

if TYPE_CHECKING:
    from appliance.audio.formats import AudioEncoder


class ResampledEncoder:
    """Resamples each window (FFmpeg's swresample) and hands it to `inner`, made for `to_rate`."""

    def __init__(self, inner: AudioEncoder, from_rate: int, to_rate: int) -> None:
        self.inner = inner
        self.content_type = inner.content_type
        self._resampler = Resampler(from_rate, to_rate)
        self._finished = False

    def encode(self, samples: np.ndarray) -> bytes:
        if self._finished:
            raise RuntimeError("resampling encoder already finished or closed")
        return self.inner.encode(self._resampler.resample(samples))

    def finish(self) -> bytes:
        if self._finished:
            return b""
        try:
            return self.inner.encode(self._resampler.flush()) + self.inner.finish()
        finally:
            self.close()

    def close(self) -> None:
        self._finished = True
        self.inner.close()
