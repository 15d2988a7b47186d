"""The one output pipeline every transport uses: engine → encoder → sink.

A transport prepares a request (`SpeechEngine.prepare`, which gives the stream's facts for its headers or start
message), takes an admission slot, and hands `play` a sink: an async function that sends bytes (an HTTP chunk,
a WebSocket frame, a Wyoming event, a file write). Encoding runs off the event loop, while the inference
workers go on decoding the windows after it.

Failures: an error raised by the sink (the client went away, a send timed out) comes out unchanged; a
failure of synthesis or encoding after the stream started comes out as `StreamFailed`, after the encoder and
the engine's stream were closed, so the transport can end its started stream in its own way (cut an HTTP
body, send an error event) knowing everything the sink got was whole.

Every call is recorded in the engine's request statistics with its outcome, audio seconds and, for a request
whose text was whole from the start, its wait for the first audio and its real-time factor (streamed text
would measure how fast its source writes, not the appliance).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from ..audio.formats import EncoderSettings, make_encoder
from .engine import PreparedRequest, SpeechEngine, StreamTally
from .off_loop import off_loop
from .request_stats import Outcome
from .word_timings import WordTiming

Sink = Callable[[bytes], Awaitable[None]]
WordsSink = Callable[[tuple[WordTiming, ...]], Awaitable[None]]


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
    words_sink: WordsSink | None = None,
    *,
    asked_at: float | None = None,
) -> PlayStats:
    """Synthesises `prepared` (and the streamed `more_text`) into the sink; returns what was sent.
    `words_sink`: asks for word timings, and gets each unit's words before any of the audio they cover.
    `asked_at`: when the request asked for its admission slot (`SpeechEngine.slot`); the wait for the first
    audio is measured from there (from the start of `play` without it)."""
    facts = prepared.facts
    encoder = make_encoder(facts.audio_format, facts.sample_rate, settings)
    stats = PlayStats(facts.sample_rate)
    audio = engine.stream(prepared, more_text, stats.units, word_timings=words_sink is not None)

    async def send(data: bytes) -> None:
        if data:
            stats.first_audio_at = stats.first_audio_at or time.monotonic()
            stats.bytes_sent += len(data)
            await sink(data)

    outcome = Outcome.FAILED
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
            if chunk is not None and chunk.words and words_sink is not None:
                await words_sink(chunk.words)
            await send(data)
            if chunk is None:
                outcome = Outcome.OK
                return stats
    except (ConnectionError, TimeoutError):  # raised by the sink: the client left or stopped reading
        outcome = Outcome.CLIENT_GONE
        raise
    except asyncio.CancelledError:
        outcome = Outcome.CANCELLED
        raise
    finally:
        _record(engine, prepared, stats, outcome, asked_at if asked_at is not None else stats.started_at,
                whole_text=more_text is None)
        await audio.aclose()
        encoder.close()


def _record(engine: SpeechEngine, prepared: PreparedRequest, stats: PlayStats, outcome: Outcome, asked_at: float,
            *, whole_text: bool) -> None:
    first_audio_s = realtime_factor = None
    if whole_text and stats.first_audio_at is not None:
        first_audio_s = stats.first_audio_at - asked_at
    if whole_text and outcome is Outcome.OK and stats.samples:
        realtime_factor = (time.monotonic() - stats.started_at) / stats.audio_seconds
    engine.requests.record(prepared.transport, prepared.facts.audio_format.value, outcome,
                           audio_seconds=stats.audio_seconds, first_audio_s=first_audio_s,
                           realtime_factor=realtime_factor)
