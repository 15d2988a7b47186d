"""Text that arrives piece by piece (a language model's output over a WebSocket or Wyoming's synthesize-chunk):
cut into complete sentences as they form, bounded in total length, and read by the engine as `more_text`.

Threading: event-loop thread only (one owner: the utterance or stream it belongs to).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from ..text.sentences import SentenceBuffer
from .request import RequestError


class StreamedText:
    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self.chars = 0
        self._buffer = SentenceBuffer()
        self._sentences: asyncio.Queue[str | None] = asyncio.Queue()

    def add(self, text: str) -> None:
        """More text; each sentence it completes is handed on. RequestError (`text_too_long`) once the stream
        passes `max_chars`."""
        self.chars += len(text)
        if self.chars > self.max_chars:
            raise RequestError("text_too_long", f"streamed text exceeds {self.max_chars} characters")
        if complete := self._buffer.add(text):
            self._sentences.put_nowait(complete)

    def end(self) -> None:
        """No more text: what remains is spoken as the last sentence."""
        rest = self._buffer.flush()
        if rest.strip():
            self._sentences.put_nowait(rest)
        self._sentences.put_nowait(None)

    async def sentences(self) -> AsyncIterator[str]:
        """The complete sentences, in order, until `end`."""
        while (sentence := await self._sentences.get()) is not None:
            yield sentence
