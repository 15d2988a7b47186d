"""FFmpeg through PyAV (PyPI `av`, which bundles FFmpeg's libraries): a streaming encoder that muxes codec
packets into a byte stream as the codec emits them, and a resampler. The only module that imports `av`.

The muxer writes into a plain object with only `write()`: FFmpeg sees an output it cannot seek, so no muxer
waits for the end to go back and fill in a size or an index (MP3: no Xing header; FLAC: STREAMINFO keeps 0 total
samples, "unknown"), and `flush_packets` hands each packet over at once instead of filling a 32 KiB buffer first.

Threading: an encoder or a resampler is fed from one thread at a time (the output pipeline's off-loop jobs, one
after the other); different instances share nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import Final

import av
import numpy as np

_LAYOUT: Final = "mono"
_SAMPLES: Final = "flt"
"""What the engine produces: packed float32, one channel."""


def codec_rate(codec: str, sample_rate: int) -> int:
    """`sample_rate` if the encoder takes it, else the closest rate it takes (preferring higher ones): MP3 and AAC
    take every Piper rate (16 kHz, 22.05 kHz, ...) as it is; FLAC takes any."""
    rates = av.Codec(codec, "w").audio_rates
    if not rates or sample_rate in rates:
        return sample_rate
    higher = [r for r in rates if r > sample_rate]
    return min(higher) if higher else max(rates)


class MuxedStreamEncoder:
    """Mono float32 samples in, a container's bytes out, packet by packet, as the codec emits them.

    The codec holds back what it needs to fill a frame (at 22.05 kHz: MP3 576 samples, AAC 1024, FLAC 2304) plus
    its look-ahead; `finish()` flushes the rest. PyAV itself converts frames to the codec's sample format, rate
    and frame size (its AudioResampler, FFmpeg's swresample), so any window size and any voice rate can be fed.
    """

    def __init__(self, *, container: str, codec: str, sample_rate: int, content_type: str,
                 bit_rate: int | None = None, muxer_options: Mapping[str, str] | None = None) -> None:
        self.sample_rate = sample_rate
        self.content_type = content_type
        self._output = _Collected()
        self._container = av.open(self._output, "w", format=container, options=dict(muxer_options or {}),
                                  container_options={"flush_packets": "1", "metadata_header_padding": "0"})
        try:
            self._stream = self._container.add_stream(codec, rate=codec_rate(codec, sample_rate), layout=_LAYOUT)
            if bit_rate is not None:
                self._stream.codec_context.bit_rate = bit_rate
            self._stream.codec_context.open()  # a bad setting fails here, not with the first audio
        except BaseException:
            self._container.close()
            raise
        self._time_base = Fraction(1, sample_rate)
        self._pts = 0
        self._finished = False

    def encode(self, samples: np.ndarray) -> bytes:
        if self._finished:
            raise RuntimeError(f"{self.content_type} encoder already finished or closed")
        x = _clean(samples)
        if len(x):
            frame = av.AudioFrame.from_ndarray(x.reshape(1, -1), format=_SAMPLES, layout=_LAYOUT)
            frame.sample_rate = self.sample_rate
            frame.time_base = self._time_base
            frame.pts = self._pts
            self._pts += len(x)
            self._mux(frame)
        return self._output.take()

    def finish(self) -> bytes:
        """Flushes the codec and ends the container; returns the last bytes."""
        if self._finished:
            return b""
        try:
            self._mux(None)
            self._container.close()  # the trailer, if the format has one that needs no seeking
            return self._output.take()
        finally:
            self.close()

    def close(self) -> None:
        """Frees FFmpeg's resources; anything still buffered is dropped. Safe to call twice."""
        if not self._finished:
            self._finished = True
            self._container.close()
            self._output.take()

    def _mux(self, frame: av.AudioFrame | None) -> None:
        for packet in self._stream.encode(frame):
            self._container.mux(packet)


class Resampler:
    """Mono float32 from one rate to another with FFmpeg's swresample (PyAV's AudioResampler). Its filter holds
    back a few samples; `flush()` returns them, so the output has the input's duration at the new rate."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._resampler = av.AudioResampler(format=_SAMPLES, layout=_LAYOUT, rate=to_rate)
        self._time_base = Fraction(1, from_rate)
        self._pts = 0

    def resample(self, samples: np.ndarray) -> np.ndarray:
        x = _clean(samples)
        if not len(x):
            return x
        frame = av.AudioFrame.from_ndarray(x.reshape(1, -1), format=_SAMPLES, layout=_LAYOUT)
        frame.sample_rate = self.from_rate
        frame.time_base = self._time_base
        frame.pts = self._pts
        self._pts += len(x)
        return _joined(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        return _joined(self._resampler.resample(None))


class _Collected:
    """The muxer's output: a write-only byte sink (no seek, so FFmpeg treats it as a stream)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def _clean(samples: np.ndarray) -> np.ndarray:
    """Same clipping as PCM/WAV and Opus, so every format carries the same signal; NaN becomes silence."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected mono samples (1-D array), got shape {x.shape}")
    return np.ascontiguousarray(np.clip(np.nan_to_num(x, nan=0.0), -1.0, 1.0))


def _joined(frames: list[av.AudioFrame]) -> np.ndarray:
    if not frames:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames]).astype(np.float32, copy=False)
