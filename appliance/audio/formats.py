"""Output formats and the one factory transports use to get an encoder for a request."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np

from appliance.audio import aac, flac, mp3
from appliance.audio.opus import CONTENT_TYPE as OPUS_CONTENT_TYPE
from appliance.audio.opus import OggOpusEncoder
from appliance.audio.pcm import PcmEncoder, pcm_content_type
from appliance.audio.resampled import ResampledEncoder
from appliance.audio.wav import WAV_CONTENT_TYPE, WavStreamEncoder

DEFAULT_OPUS_BITRATE: Final = 24_000
DEFAULT_OPUS_COMPLEXITY: Final = 10
OPUS_BITRATE_RANGE: Final = (6_000, 510_000)


class AudioFormat(enum.StrEnum):
    OPUS = "opus"
    WAV = "wav"
    PCM = "pcm"
    MP3 = "mp3"
    AAC = "aac"
    """AAC-LC in ADTS."""
    FLAC = "flac"


@dataclass(frozen=True)
class EncoderSettings:
    opus_bitrate: int = DEFAULT_OPUS_BITRATE
    """Ogg Opus bitrate in bit/s; 24 kbps is transparent-enough for a single synthetic voice."""
    opus_complexity: int = DEFAULT_OPUS_COMPLEXITY
    """Opus encoder effort, 0-10. Full effort is affordable for one mono voice: measured ~40x real time on one
    x86 server core (complexity 5: ~65x), so expect a few percent of an RK3588 A76 core per stream, small
    next to the neural model. Lower it only for many concurrent streams on the A55 cores."""
    output_rate: int | None = None
    """Resample to this rate before encoding (OpenAI's `pcm` is 24 kHz); None: the voice's own rate."""

    def __post_init__(self) -> None:
        low, high = OPUS_BITRATE_RANGE
        if not low <= self.opus_bitrate <= high:
            raise ValueError(f"opus_bitrate must be within {low}..{high} bit/s, got {self.opus_bitrate}")
        if not 0 <= self.opus_complexity <= 10:
            raise ValueError(f"opus_complexity must be within 0..10, got {self.opus_complexity}")
        if self.output_rate is not None and not 8_000 <= self.output_rate <= 192_000:
            raise ValueError(f"output_rate must be within 8000..192000 Hz, got {self.output_rate}")

    def stream_rate(self, sample_rate: int) -> int:
        """The rate a stream made from audio at `sample_rate` carries (its headers and content type say it)."""
        return self.output_rate or sample_rate


class AudioEncoder(Protocol):
    """Fed window by window with float32 mono samples in [-1, 1]; out come bytes ready to send."""

    content_type: str

    def encode(self, samples: np.ndarray) -> bytes:
        """Encodes more samples; returns the bytes that can be sent now (may be b"")."""
        ...

    def finish(self) -> bytes:
        """Ends the stream: flushes everything and frees native resources; returns the final bytes."""
        ...

    def close(self) -> None:
        """Frees native resources without finishing (e.g. the client went away); safe to call twice."""
        ...


def content_type(fmt: AudioFormat, sample_rate: int) -> str:
    """The media type of a stream, known before any encoder exists (for headers sent ahead)."""
    match fmt:
        case AudioFormat.OPUS:
            return OPUS_CONTENT_TYPE
        case AudioFormat.WAV:
            return WAV_CONTENT_TYPE
        case AudioFormat.PCM:
            return pcm_content_type(sample_rate)
        case AudioFormat.MP3:
            return mp3.CONTENT_TYPE
        case AudioFormat.AAC:
            return aac.CONTENT_TYPE
        case AudioFormat.FLAC:
            return flac.CONTENT_TYPE
    raise ValueError(f"unknown audio format: {fmt!r}")


def make_encoder(fmt: AudioFormat, sample_rate: int, settings: EncoderSettings) -> AudioEncoder:
    """An encoder fed with samples at `sample_rate`; its output is at `settings.stream_rate(sample_rate)`."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    rate = settings.stream_rate(sample_rate)
    encoder = _encoder(fmt, rate, settings)
    return encoder if rate == sample_rate else ResampledEncoder(encoder, sample_rate, rate)


def _encoder(fmt: AudioFormat, sample_rate: int, settings: EncoderSettings) -> AudioEncoder:
    match fmt:
        case AudioFormat.OPUS:
            return OggOpusEncoder(sample_rate, settings.opus_bitrate, settings.opus_complexity)
        case AudioFormat.WAV:
            return WavStreamEncoder(sample_rate)
        case AudioFormat.PCM:
            return PcmEncoder(sample_rate)
        case AudioFormat.MP3:
            return mp3.Mp3StreamEncoder(sample_rate)
        case AudioFormat.AAC:
            return aac.AacStreamEncoder(sample_rate)
        case AudioFormat.FLAC:
            return flac.FlacStreamEncoder(sample_rate)
    raise ValueError(f"unknown audio format: {fmt!r}")


def preload_encoders(sample_rate: int = 22050) -> None:
    """Loads each encoder's native library once (libopusenc takes ~75 ms the first time; FFmpeg's codecs are
    opened once too), so the first clients after start-up do not pay for it on the event loop."""
    for fmt in AudioFormat:
        encoder = make_encoder(fmt, sample_rate, EncoderSettings())
        encoder.finish()
        encoder.close()
