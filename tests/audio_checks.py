"""Measuring audio in tests: SNR, alignment, decoding with independent decoders (opusdec, Debian's ffmpeg)."""

from __future__ import annotations

import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    n = min(len(reference), len(test))
    error = reference[:n] - test[:n]
    return float(10 * np.log10(np.sum(reference[:n] ** 2) / max(np.sum(error**2), 1e-20)))


def decode_ogg_opus(data: bytes) -> tuple[np.ndarray, int]:
    """Decodes with opus-tools' opusdec (not our code) to 48 kHz float samples."""
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder, "in.ogg"), Path(folder, "out.wav")
        source.write_bytes(data)
        subprocess.run(["opusdec", "--quiet", "--rate", "48000", str(source), str(target)], check=True)
        with wave.open(str(target)) as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    return pcm.astype(np.float32) / 32768.0, rate


def resample(samples: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    """Band-limited (FFT) resampling, good enough to compare waveforms."""
    n = round(len(samples) * new_rate / rate)
    spectrum = np.fft.rfft(samples)
    out = np.zeros(n // 2 + 1, dtype=complex)
    keep = min(len(out), len(spectrum))
    out[:keep] = spectrum[:keep]
    return np.fft.irfft(out, n) * (n / len(samples))


def best_correlation(a: np.ndarray, b: np.ndarray, max_lag: int) -> float:
    """Highest normalised correlation of a and b over lags up to `max_lag` samples."""
    best = -1.0
    for lag in range(-max_lag, max_lag + 1):
        x = a[max(0, lag):]
        y = b[max(0, -lag):]
        n = min(len(x), len(y))
        x, y = x[:n], y[:n]
        denominator = np.linalg.norm(x) * np.linalg.norm(y)
        if denominator > 0:
            best = max(best, float(np.dot(x, y) / denominator))
    return best


def decode_with_ffmpeg(data: bytes) -> tuple[np.ndarray, int]:
    """Decodes any container FFmpeg knows (Debian's ffmpeg and ffprobe, not the PyAV copy we encode with) to mono
    float samples at the stream's own rate."""
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=sample_rate",
                            "-of", "csv=p=0", "pipe:0"], input=data, capture_output=True, check=True)
    rate = int(probe.stdout.decode().strip())
    decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", "pipe:0", "-f", "s16le", "-ac", "1", "pipe:1"],
                             input=data, capture_output=True, check=True)
    return np.frombuffer(decoded.stdout, dtype="<i2").astype(np.float32) / 32768.0, rate
