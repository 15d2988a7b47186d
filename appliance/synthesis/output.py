"""The one output pipeline every transport uses: engine → encoder → sink.

A transport prepares a request (`SpeechEngine.prepare`, which gives the stream's facts for its headers or start
message), takes an admission slot, and hands `play` a sink: an async function that sends bytes (an HTTP chunk,
a WebSocket frame, a Wyoming event, a file write). Encoding runs off the event loop, while the inference
workers go on decoding the windows after it.

Failures: an error raised by the sink (the client went away, a send timed out) comes out unchanged; a
failure of synthesis or encoding after the stream started comes out as `StreamFailed`, after the encoder and
the engine's stream were closed, so the transport can end its started stream in its own way (cut an HTTP
body, send an error event) knowing everything the sink got was whole.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from ..audio.formats import EncoderSettings, make_encoder
from .engine import PreparedRequest, SpeechEngine, StreamTally
from .off_loop import off_loop

Sink = Callable[[bytes], Awaitable[None]]


class StreamFailed(Exception):
    """Synthesis or encoding failed after the stream started; `__cause__` says why."""


@dataclass
class PlayStats:
    sample_rate: int
    started_at: float = field(default_factory=time.monotonic)
    samples: int = 0
    first_audio_at: float | None = None
    """When the first bytes carrying audio went to the sink (monotonic clock)."""
    bytes_sent: int = 0
    units: StreamTally = field(default_factory=StreamTally)
    """Text units played from the phrase cache and synthesised."""

    @property
    def audio_seconds(self) -> float:
        return self.samples / self.sample_rate


async def play(
    engine: SpeechEngine,
    prepared: PreparedRequest,
    sink: Sink,
    settings: EncoderSettings,
    more_text: AsyncIterator[str] | None = None,
) -> PlayStats:
    """Synthesises `prepared` (and the streamed `more_text`) into the sink; returns what was sent."""
    facts = prepared.facts
    encoder = make_encoder(facts.audio_format, facts.sample_rate, settings)
    stats = PlayStats(facts.sample_rate)
    audio = engine.stream(prepared, more_text, stats.units)

    async def send(data: bytes) -> None:
        if data:
            stats.first_audio_at = stats.first_audio_at or time.monotonic()
            stats.bytes_sent += len(data)
            await sink(data)

    try:
        while True:
            try:
                chunk = await anext(audio, None)
                if chunk is None:
                    data = await off_loop(encoder.finish)
                else:
                    stats.samples += chunk.samples.size
                    data = await off_loop(encoder.encode, chunk.samples)
            except Exception as e:
                raise StreamFailed(f"{type(e).__name__}: {e}") from e
            await send(data)
            if chunk is None:
                return stats
    finally:
        await audio.aclose()
        encoder.close()
