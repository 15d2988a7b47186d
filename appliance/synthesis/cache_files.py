"""One phrase-cache file: a header that lets a reader prove the samples are whole, then the samples.

Layout (little-endian): magic `PHRC`, version u16, reserved u16, sample rate u32, sample count u32, a 16-byte
blake2b digest of the sample bytes, then the samples as float32. Float32 keeps a hit sample-for-sample equal to
the miss that stored it (int16 would halve the space but a hit would then differ from the first playing by up
to half an LSB before the encoders quantise); at 22,050 Hz that is 88 KB per second of speech.

Blocking file I/O: call from a worker thread, never on the event loop.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path
from typing import Final

import numpy as np

MAGIC: Final = b"PHRC"
VERSION: Final = 1
_HEADER: Final = struct.Struct("<4sHHII16s")
HEADER_BYTES: Final = _HEADER.size
SUFFIX: Final = ".phrase"
TEMP_SUFFIX: Final = ".tmp"


class BadCacheFile(ValueError):
    """A cache file that is truncated, corrupt or of another version; the message says which."""


def file_bytes(samples: int) -> int:
    """The size of a file holding `samples` samples."""
    return HEADER_BYTES + 4 * samples


def write_file(path: Path, samples: np.ndarray, sample_rate: int) -> int:
    """Writes atomically (a temporary file renamed over `path`): a reader sees the old file, the new one or
    none, never half of one. Returns the file's size."""
    data = np.ascontiguousarray(samples, dtype="<f4").tobytes()
    header = _HEADER.pack(MAGIC, VERSION, 0, sample_rate, len(data) // 4, _digest(data))
    temp = path.with_name(path.name + TEMP_SUFFIX)
    try:
        with temp.open("wb") as f:
            f.write(header)
            f.write(data)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return len(header) + len(data)


def read_file(path: Path) -> tuple[np.ndarray, int]:
    """(samples as float32, sample rate); BadCacheFile if the file is not exactly what `write_file` wrote.
    FileNotFoundError if it is gone."""
    raw = path.read_bytes()
    if len(raw) < HEADER_BYTES:
        raise BadCacheFile(f"{path.name}: truncated header ({len(raw)} bytes)")
    magic, version, _reserved, rate, count, digest = _HEADER.unpack_from(raw)
    if magic != MAGIC or version != VERSION:
        raise BadCacheFile(f"{path.name}: not a version {VERSION} phrase file")
    data = raw[HEADER_BYTES:]
    if len(data) != 4 * count:
        raise BadCacheFile(f"{path.name}: {len(data)} bytes of samples, the header says {4 * count}")
    if _digest(data) != digest:
        raise BadCacheFile(f"{path.name}: the samples do not match their digest")
    return np.frombuffer(data, dtype="<f4").astype(np.float32), rate


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()
