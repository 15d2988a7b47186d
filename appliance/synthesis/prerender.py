"""Pre-rendered prompts: phrases rendered into the phrase cache in the background (start-up's `cache.prerender`
file, `POST /api/cache/prerender`), so their first request is already a hit.

Each phrase is checked like a request when it is added (`SpeechEngine.prepare`: voice, length, text) and then
rendered by `SpeechEngine.prerender`, at the lowest priority: a live request never waits behind it.

Threading: event-loop thread only (one owner: the daemon's `prerender_context`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from ..health import PrerenderHealth
from .engine import PreparedRequest, SpeechEngine
from .request import RequestError, SynthesisRequest

log = logging.getLogger(__name__)

MAX_QUEUED: Final = 10_000
"""Phrases waiting at once; more are refused (`prerender_queue_full`)."""


def parse_phrase_lines(lines: Iterable[str]) -> list[tuple[str | None, str]]:
    """(voice or None, text) per phrase line: `text` or `voice|text`. Blank lines and `#` comments are skipped.
    The part before the first `|` is a voice name only if it has no whitespace (a phrase may contain `|`)."""
    phrases: list[tuple[str | None, str]] = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        prefix, bar, rest = line.partition("|")
        if bar and prefix and not any(c.isspace() for c in prefix):
            phrases.append((prefix, rest.strip()))
        else:
            phrases.append((None, line))
    return phrases


def read_phrase_file(path: Path) -> list[tuple[str | None, str]]:
    """The phrases of a pre-render file (blocking); none, logged, if it cannot be read."""
    try:
        return parse_phrase_lines(path.read_text(encoding="utf-8", errors="replace").splitlines())
    except OSError as e:
        log.warning("pre-render file %s not read: %s", path, e)
        return []


class Prerenderer:
    def __init__(self, engine: SpeechEngine, max_queued: int = MAX_QUEUED) -> None:
        self.engine = engine
        self.max_queued = max_queued
        self._waiting: deque[PreparedRequest] = deque()
        self._wake = asyncio.Event()
        self._rendering = 0
        self._done = 0
        self._failed = 0

    def health(self) -> PrerenderHealth:
        return PrerenderHealth(queued=len(self._waiting) + self._rendering, done=self._done, failed=self._failed)

    def add(self, texts: list[str], voice: str | None = None) -> int:
        """Queues phrases; RequestError (nothing queued) if any is refused or the queue would overflow."""
        if len(self._waiting) + len(texts) > self.max_queued:
            raise RequestError("prerender_queue_full",
                               f"{len(self._waiting)} phrases are waiting; at most {self.max_queued} may")
        prepared = [self.engine.prepare(SynthesisRequest(text=text, voice=voice)) for text in texts]
        self._waiting.extend(prepared)
        self._wake.set()
        return len(prepared)

    def add_phrases(self, phrases: list[tuple[str | None, str]], source: str) -> int:
        """The start-up file's phrases (`read_phrase_file`); one that is refused (an unknown voice, an over-long
        line) is logged, counted as failed and skipped. Returns the phrases queued."""
        queued = 0
        for voice, text in phrases:
            try:
                queued += self.add([text], voice)
            except RequestError as e:
                log.warning("pre-render file %s: skipped %r: %s", source, text[:40], e.message)
                self._failed += 1
        log.info("pre-render file %s: %d phrase(s) queued", source, queued)
        return queued

    async def run(self) -> None:
        """Renders the waiting phrases one after another, until cancelled."""
        while True:
            while not self._waiting:
                self._wake.clear()
                await self._wake.wait()
            prepared = self._waiting.popleft()
            self._rendering = 1
            try:
                await self.engine.prerender(prepared)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("pre-rendering %r failed: %s: %s", prepared.text[:40], type(e).__name__, e)
                self._failed += 1
            else:
                self._done += 1
            finally:
                self._rendering = 0
