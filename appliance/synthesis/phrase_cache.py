"""The phrase cache: the audio of synthesised text units, kept in the state folder across restarts, so the same
sentence (same voice model, decoder kind, speaker, scales, seed and text) is played again instead of synthesised.

The index (file name → size, least recently used first) lives in memory and is rebuilt from the folder at
start-up, ordered by the files' modification times, which a hit refreshes. Files are written by `cache_files`
(atomic, with a digest); one that fails its check on reading is deleted and counted, and the unit is synthesised
again (and stored anew).

Threading: one lock guards the index and the counters. `contains`, `note_miss` and `health` are called on the
event loop, `load` on a thread of the loop's default executor, and `store` runs on the cache's own writer thread
(`store_later`), so writes never block the event loop and never race each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..health import CacheHealth
from .cache_files import SUFFIX, TEMP_SUFFIX, BadCacheFile, file_bytes, read_file, write_file

log = logging.getLogger(__name__)


def normalised_text(text: str) -> str:
    """Whitespace collapsed; case and punctuation kept (they change the prosody)."""
    return " ".join(text.split())


@dataclass(frozen=True)
class PhraseKey:
    """Everything the audio of one text unit depends on."""

    voice_sha256: str
    """The voice model file's digest: a new model of the same name is another voice."""
    decoder: str
    """'npu' or 'cpu': the NPU's fp16 audio differs slightly from the CPU's."""
    speaker_id: int | None
    scales: tuple[float, float, float]
    """length_scale, noise_scale, noise_w."""
    seed: int
    text: str
    """Normalised (`normalised_text`)."""

    def file_name(self) -> str:
        fields = [self.voice_sha256, self.decoder, self.speaker_id, [repr(s) for s in self.scales], self.seed,
                  self.text]
        digest = hashlib.blake2b(json.dumps(fields).encode(), digest_size=20).hexdigest()
        return digest + SUFFIX


@dataclass
class _Counters:
    hits: int = 0
    misses: int = 0
    rejected_files: int = 0


class PhraseCache:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._index: OrderedDict[str, int] = OrderedDict()
        self._bytes = 0
        self._counters = _Counters()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="phrase-cache")
        folder.mkdir(parents=True, exist_ok=True)
        self._rebuild()

    def close(self) -> None:
        """Waits for the writes already handed over."""
        self._writer.shutdown(wait=True)

    # -- reading --------------------------------------------------------------------------------------

    def contains(self, key: PhraseKey) -> bool:
        """Whether the unit is in the index (cheap: no file is touched)."""
        with self._lock:
            return key.file_name() in self._index

    def note_miss(self) -> None:
        """A unit that could have come from the cache was synthesised."""
        with self._lock:
            self._counters.misses += 1

    def load(self, key: PhraseKey) -> np.ndarray | None:
        """The unit's samples, or None (counted as a miss) if they are not here or their file was bad (then
        removed and counted). Blocking."""
        name = key.file_name()
        path = self.folder / name
        try:
            samples, _rate = read_file(path)
        except FileNotFoundError:
            self._forget(name)
            self.note_miss()
            return None
        except BadCacheFile as e:
            log.warning("phrase cache: %s; removed, the sentence is synthesised again", e)
            path.unlink(missing_ok=True)
            self._forget(name)
            with self._lock:
                self._counters.rejected_files += 1
                self._counters.misses += 1
            return None
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)  # its place in the LRU order, kept across restarts
        with self._lock:
            if name in self._index:
                self._index.move_to_end(name)
            self._counters.hits += 1
        return samples

    # -- writing --------------------------------------------------------------------------------------

    def store_later(self, key: PhraseKey, samples: np.ndarray, sample_rate: int) -> Future[None]:
        """Stores on the writer thread; the caller does not wait."""
        return self._writer.submit(self._store_logged, key, samples, sample_rate)

    def store(self, key: PhraseKey, samples: np.ndarray, sample_rate: int) -> None:
        """Blocking. A unit larger than the whole cache is not kept."""
        size = file_bytes(samples.size)
        if size > self.max_bytes:
            return
        name = key.file_name()
        with self._lock:  # room first, so the folder never holds much more than max_bytes
            self._drop(name)
            evicted = self._evict_for(size)
        for old in evicted:
            (self.folder / old).unlink(missing_ok=True)
        write_file(self.folder / name, samples, sample_rate)
        with self._lock:
            self._drop(name)
            self._index[name] = size
            self._bytes += size

    def _store_logged(self, key: PhraseKey, samples: np.ndarray, sample_rate: int) -> None:
        try:
            self.store(key, samples, sample_rate)
        except OSError as e:  # a full or read-only disk costs the cache, never the audio
            log.warning("phrase cache: could not store a sentence: %s", e)

    # -- index ----------------------------------------------------------------------------------------

    def health(self) -> CacheHealth:
        with self._lock:
            return CacheHealth(hits=self._counters.hits, misses=self._counters.misses, entries=len(self._index),
                               bytes=self._bytes, max_bytes=self.max_bytes,
                               rejected_files=self._counters.rejected_files)

    def _rebuild(self) -> None:
        found: list[tuple[float, str, int]] = []
        for path in self.folder.iterdir():
            try:
                if path.name.endswith(TEMP_SUFFIX):  # a write cut short (power loss): never renamed, never valid
                    path.unlink()
                elif path.name.endswith(SUFFIX):
                    stat = path.stat()
                    found.append((stat.st_mtime, path.name, stat.st_size))
            except FileNotFoundError:
                continue
        with self._lock:
            for _mtime, name, size in sorted(found):
                self._index[name] = size
                self._bytes += size
            evicted = self._evict_for(0)  # the limit may have shrunk since the last run
        for old in evicted:
            (self.folder / old).unlink(missing_ok=True)
        log.info("phrase cache: %d sentence(s), %.1f MB of %.1f MB", len(self._index), self._bytes / 1e6,
                 self.max_bytes / 1e6)

    def _forget(self, name: str) -> None:
        with self._lock:
            self._drop(name)

    def _drop(self, name: str) -> None:
        """Under the lock."""
        size = self._index.pop(name, None)
        if size is not None:
            self._bytes -= size

    def _evict_for(self, size: int) -> list[str]:
        """Under the lock: removes the least recently used entries until `size` more bytes fit; returns their
        names for the caller to delete outside the lock."""
        evicted = []
        while self._index and self._bytes + size > self.max_bytes:
            name, old = self._index.popitem(last=False)
            self._bytes -= old
            evicted.append(name)
        return evicted


def cache_max_bytes(max_mb: float) -> int:
    return math.floor(max_mb * 1_000_000)
