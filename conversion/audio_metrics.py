"""How close the NPU's audio is to onnxruntime's: signal-to-noise ratio of the samples, and mel-cepstral
distortion (MCD), the usual measure of how different two renderings of the same speech sound.

Both compare sample-aligned audio of one sentence (the same latent decoded two ways), so MCD needs no time
warping: frame t of one is frame t of the other."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """10·log10(reference energy / error energy); -inf when the lengths differ (a framing bug, not noise)."""
    if len(reference) != len(test):
        return float("-inf")
    error = float(np.sum((reference - test) ** 2))
    return float(10 * np.log10(float(np.sum(reference**2)) / max(error, 1e-20)))


@dataclass(frozen=True)
class CepstrumSettings:
    """Mel cepstra as speech-synthesis papers compute them for MCD: 80 mel bands of a 1024-point STFT (hop 256),
    log power, DCT-II, coefficients 1..24 (c0, the loudness, is left out)."""

    n_fft: int = 1024
    hop: int = 256
    mel_bands: int = 80
    coefficients: int = 24
    floor_db: float = -60.0
    """Power more than 60 dB below the reference's loudest bin (about the dynamic range of a speech spectrum) is
    clamped, so that rounding noise in silence and in empty high bands, inaudible beside the speech, does not
    count as distortion. With -80 dB, white noise at 55 dB SNR would score 24 dB."""


def mel_cepstral_distortion(reference: np.ndarray, test: np.ndarray, sample_rate: int,
                            settings: CepstrumSettings = CepstrumSettings()) -> float:
    """Mean MCD in dB over the frames: (10 / ln 10) · sqrt(2 · Σ_k (c_k − ĉ_k)²), k = 1..coefficients.
    0 for identical audio; differences people start to hear are around 1 dB and more."""
    if len(reference) != len(test):
        raise ValueError(f"audio lengths differ: {len(reference)} and {len(test)} samples")
    ref_power = _power_spectrogram(reference, settings)
    floor = float(ref_power.max()) * 10 ** (settings.floor_db / 10) + 1e-20
    ref_ceps = _mel_cepstra(ref_power, floor, sample_rate, settings)
    test_ceps = _mel_cepstra(_power_spectrogram(test, settings), floor, sample_rate, settings)
    difference = ref_ceps - test_ceps
    per_frame = (10 / math.log(10)) * np.sqrt(2 * np.sum(difference**2, axis=1))
    return float(np.mean(per_frame))


def _power_spectrogram(audio: np.ndarray, settings: CepstrumSettings) -> np.ndarray:
    signal = np.asarray(audio, dtype=np.float64).reshape(-1)
    signal = np.pad(signal, (settings.n_fft // 2, settings.n_fft // 2))
    count = 1 + max(0, (len(signal) - settings.n_fft) // settings.hop)
    starts = np.arange(count) * settings.hop
    frames = signal[starts[:, None] + np.arange(settings.n_fft)[None, :]]
    return np.abs(np.fft.rfft(frames * np.hanning(settings.n_fft), axis=1)) ** 2


def _mel_cepstra(power: np.ndarray, floor: float, sample_rate: int, settings: CepstrumSettings) -> np.ndarray:
    mel = power @ _mel_filters(sample_rate, settings.n_fft, settings.mel_bands).T
    log_mel = np.log(np.maximum(mel, floor))
    return log_mel @ _dct_matrix(settings.mel_bands, settings.coefficients + 1)[:, 1:]


@lru_cache(maxsize=8)
def _mel_filters(sample_rate: int, n_fft: int, bands: int) -> np.ndarray:
    """Triangular filters evenly spaced on the HTK mel scale, 0 Hz to Nyquist: [bands, n_fft // 2 + 1]."""
    def to_mel(hz: np.ndarray) -> np.ndarray:
        return 2595 * np.log10(1 + hz / 700)

    def to_hz(mel: np.ndarray) -> np.ndarray:
        return 700 * (10 ** (mel / 2595) - 1)

    edges = to_hz(np.linspace(0, to_mel(np.array(sample_rate / 2)), bands + 2))
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    filters = np.zeros((bands, len(bins)))
    for band in range(bands):
        low, centre, high = edges[band : band + 3]
        rising = (bins - low) / max(centre - low, 1e-9)
        falling = (high - bins) / max(high - centre, 1e-9)
        filters[band] = np.maximum(0, np.minimum(rising, falling))
    return filters


@lru_cache(maxsize=8)
def _dct_matrix(size: int, coefficients: int) -> np.ndarray:
    """Orthonormal DCT-II as a matrix: x @ M gives the first `coefficients` of x's DCT."""
    n = np.arange(size)[:, None]
    k = np.arange(coefficients)[None, :]
    matrix = np.cos(np.pi * k * (2 * n + 1) / (2 * size)) * math.sqrt(2 / size)
    matrix[:, 0] /= math.sqrt(2)
    return matrix
