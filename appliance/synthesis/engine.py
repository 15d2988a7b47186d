"""The speech engine: text in, an async stream of audio windows out. The only way transports get audio.

Blocking model work runs on a bounded set of inference workers (`workers.py`), one job (a unit's phonemes, its
encoding, one window) at a time, earliest deadline first: a new request's first window comes before the windows
of streams that are ahead of their listeners. A request whose consumer goes away stops before its next window.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from ..config import SynthesisConfig
from ..health import HealthPart, HealthSnapshot, StreamsHealth
from ..health_board import HealthBoard
from ..service.watchdog import probe_executor
from ..text.phoneme_ids import phonemes_to_ids
from ..text.phonemes import Phonemizer
from ..text.sentences import text_units
from ..text.units import phoneme_units
from .admission import Admission, default_max_streams
from .fallback import RequestFallback
from .request import LENGTH_RANGE, NOISE_RANGE, RequestError, SynthesisRequest, checked_text
from .voice_health import voice_health
from .voice_runtime import Latent, LoadedVoice, SynthesisParams
from .workers import DeadlineWorkers

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class AudioChunk:
    samples: np.ndarray
    """Mono float32 in [-1, 1]."""
    sample_rate: int
    sentence: int
    """Index of the synthesis unit (a sentence, or a bounded part of a long one) this window belongs to."""


@dataclass(frozen=True)
class PreparedRequest:
    voice: LoadedVoice
    text: str
    params: SynthesisParams
    seed: int


@dataclass
class EngineCounters:
    """Streams and windows since start-up. Event-loop thread only (`stream` runs there)."""

    active_streams: int = 0
    completed: int = 0
    cancelled: int = 0
    windows: int = 0


@dataclass
class SpeechEngine:
    voices: dict[str, LoadedVoice]
    default_voice: str
    settings: SynthesisConfig
    max_text_chars: int
    backend_reasons: dict[str, str] = field(default_factory=dict)
    """Why each voice decodes where it does (start-up's backend choice), by voice name."""
    health_board: HealthBoard = field(default_factory=HealthBoard)
    """Where the daemon's outer components report their health (event-loop thread only)."""
    phonemizer: Phonemizer = field(default_factory=Phonemizer)
    counters: EngineCounters = field(default_factory=EngineCounters)
    npu_cores: int = 0
    """NPU cores the decoders run on (0: the CPU decodes); sets the default number of streams."""

    def __post_init__(self) -> None:
        self._workers = DeadlineWorkers(self.settings.inference_threads)
        max_streams = self.settings.max_streams or default_max_streams(self.npu_cores)
        self.admission = Admission(max_streams, self.settings.queue_s)
        """Every transport takes a slot here before it starts a stream (event-loop thread only)."""

    def close(self) -> None:
        self._workers.shutdown(wait=True, cancel_futures=True)
        for voice in self.voices.values():
            voice.close()

    # -- requests -------------------------------------------------------------------------------------

    def prepare(self, request: SynthesisRequest, *, text_follows: bool = False) -> PreparedRequest:
        """Checks a request; raises RequestError naming what is wrong. Nothing is synthesised yet.
        `text_follows`: more text will be streamed into the request, so it may start empty."""
        text = checked_text(request.text if isinstance(request.text, str) else "")
        if not text.strip() and not text_follows:
            raise RequestError("empty_text", "text is empty")
        if len(text) > self.max_text_chars:
            raise RequestError(
                "text_too_long", f"text has {len(text)} characters; the limit is {self.max_text_chars}", 413
            )
        name = request.voice or self.default_voice
        voice = self.voices.get(name)
        if voice is None:
            raise RequestError("unknown_voice", f"unknown voice {name!r}; see /api/voices", 404)
        try:
            speaker_id = voice.config.speaker_id(request.speaker)
        except KeyError as e:
            raise RequestError("unknown_speaker", str(e.args[0]), 404) from None
        config = voice.config
        params = SynthesisParams(
            speaker_id=speaker_id,
            length_scale=_in_range("length_scale", request.length_scale, config.length_scale, LENGTH_RANGE),
            noise_scale=_in_range("noise_scale", request.noise_scale, config.noise_scale, NOISE_RANGE),
            noise_w=_in_range("noise_w", request.noise_w, config.noise_w, NOISE_RANGE),
        )
        seed = request.seed if request.seed is not None else self.settings.seed
        if seed is None:
            seed = secrets.randbits(63)
        return PreparedRequest(voice, text, params, seed)

    async def stream(
        self, prepared: PreparedRequest, more_text: AsyncIterator[str] | None = None
    ) -> AsyncIterator[AudioChunk]:
        """Audio windows in order, for `prepared.text` and then each piece of `more_text` (text arriving from
        a language model, already cut at sentence ends). Closing the iterator (client gone, barge-in) stops
        the work: the window being decoded finishes, no further window starts."""
        voice = prepared.voice
        rng = np.random.default_rng(prepared.seed)
        pace = _Pace(time.monotonic(), voice.config.sample_rate)
        # One sentence is encoded ahead while the current one decodes. Sentences are encoded in order, so
        # noise is drawn in order and the audio does not depend on timing.
        latents: asyncio.Queue[Latent | None] = asyncio.Queue(maxsize=1)

        async def encode_ahead() -> None:
            async for piece in _pieces(prepared.text, more_text):
                for ids in await self._run(pace.encode_deadline(), self.sentence_ids, voice, piece):
                    latent = await self._run(pace.encode_deadline(), voice.encode, ids, prepared.params, rng)
                    pace.encoded += latent.frames * voice.samples_per_frame
                    await latents.put(latent)
            await latents.put(None)

        fallback = RequestFallback(voice.fallback_counters)
        policy = voice.decoder_policy()
        self._track(+1)
        encoder = asyncio.create_task(encode_ahead())
        useful: int | None = None
        finished = False
        try:
            for sentence in itertools.count():
                latent = await _next_or_raise(latents, encoder)
                if latent is None:
                    break
                windows = voice.audio_windows(latent, useful, fallback, policy)
                while (step := await self._run(pace.window_deadline(), windows.run_next)) is not None:
                    window, audio = step
                    pace.decoded += audio.size
                    self.counters.windows += 1
                    useful = policy.next_useful(window.emit_end - window.emit_start)
                    yield AudioChunk(audio.reshape(-1).astype(np.float32, copy=False),
                                     voice.config.sample_rate, sentence)
            finished = True
        finally:
            encoder.cancel()
            self._track(-1, finished)

    async def _run(self, deadline: float, fn: Callable[..., T], *args: Any) -> T:
        """One blocking job on the inference workers, earliest deadline first."""
        return await asyncio.wrap_future(self._workers.submit_by(deadline, fn, *args))

    def sentence_ids(self, voice: LoadedVoice, text: str) -> list[list[int]]:
        """Phoneme ids of each bounded unit of `text` (blocking: espeak-ng), one list per encoder call."""
        found = []
        for unit in text_units(text):  # `text` is usually one unit already; bounded here for every caller
            for sentence in self.phonemizer.sentences(unit, voice.config.espeak_voice):
                for phonemes in phoneme_units(sentence):  # numbers expand: "123…" is ~10 phonemes a character
                    ids = phonemes_to_ids(phonemes, voice.config.phoneme_id_map)
                    if len(ids) > 3:  # more than BOS, PAD, EOS: something to say
                        found.append(ids)
        return found

    def _track(self, delta: int, finished: bool = False) -> None:
        self.counters.active_streams += delta
        if delta < 0:
            if finished:
                self.counters.completed += 1
            else:
                self.counters.cancelled += 1
        self.health_board.changed(HealthPart.STREAMS)

    # -- health ---------------------------------------------------------------------------------------

    async def probe_workers(self, timeout_s: float) -> bool:
        """True if an inference worker picks up a trivial job within the timeout (the pool is not wedged)."""
        return await probe_executor(self._workers, timeout_s)

    def health(self) -> HealthSnapshot:
        """Everything /healthz, the status line and the TXT record show. Event-loop thread only."""
        counters, admission = self.counters, self.admission
        streams = StreamsHealth(
            active=counters.active_streams, completed=counters.completed, cancelled=counters.cancelled,
            max=admission.max_streams, waiting=admission.waiting, rejected_busy=admission.counters.rejected,
            windows=counters.windows)
        voices = tuple(voice_health(voice, self.backend_reasons.get(name, "")) for name, voice in self.voices.items())
        return self.health_board.snapshot(self.default_voice, voices, streams)

    def describe_voices(self) -> list[dict]:
        described = []
        for name, voice in self.voices.items():
            config = voice.config
            speakers = sorted(config.speaker_id_map, key=config.speaker_id_map.get) if config.speaker_id_map else []
            described.append({
                "name": name,
                "language": config.language,
                "espeak_voice": config.espeak_voice,
                "sample_rate": config.sample_rate,
                "num_speakers": config.num_speakers,
                "speakers": speakers,
                "default": name == self.default_voice,
                "backend": voice.decoder.name,
                "defaults": {"length_scale": config.length_scale, "noise_scale": config.noise_scale,
                             "noise_w": config.noise_w},
            })
        return described


@dataclass
class _Pace:
    """When a stream's jobs are due: when its listener would run out of audio, had playback started with the
    request. A window is due once the audio decoded so far has played; the next unit's encoding once all the
    audio already encoded (decoded or not) has played, so looking ahead never delays another stream's first
    window."""

    started: float
    sample_rate: int
    decoded: int = 0
    """Samples decoded so far."""
    encoded: int = 0
    """Samples of every unit encoded so far (decoded or still waiting)."""

    def window_deadline(self) -> float:
        return self.started + self.decoded / self.sample_rate

    def encode_deadline(self) -> float:
        return self.started + self.encoded / self.sample_rate


async def _pieces(text: str, more_text: AsyncIterator[str] | None) -> AsyncIterator[str]:
    """Bounded synthesis units, in order: each is phonemized and encoded on its own, so memory and the wait
    before the first audio do not grow with the text."""
    for piece in text_units(text):
        yield piece
    if more_text is not None:
        async for chunk in more_text:
            for piece in text_units(chunk):
                yield piece


async def _next_or_raise(queue: asyncio.Queue[Latent | None], producer: asyncio.Task[None]) -> Latent | None:
    """The next latent, or the producer's exception if it failed (instead of waiting forever)."""
    getter = asyncio.ensure_future(queue.get())
    try:
        await asyncio.wait({getter, producer}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        getter.cancel()
        raise
    if not getter.done() and producer.exception() is not None:
        getter.cancel()
        raise producer.exception()
    return await getter  # the producer finished after queueing its last item


def _in_range(name: str, value: float | None, default: float, bounds: tuple[float, float]) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RequestError("invalid_option", f"{name} must be a number")
    low, high = bounds
    if not low <= value <= high:
        raise RequestError("out_of_range", f"{name} must be between {low} and {high}, got {value}")
    return float(value)
