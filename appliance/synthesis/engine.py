"""The speech engine: text in, an async stream of audio windows out. The only way transports get audio.

Blocking model work runs on a bounded set of inference workers (`workers.py`), one job (a unit's phonemes, its
encoding, one window) at a time, earliest deadline first: a new request's first window comes before the windows
of streams that are ahead of their listeners. A request whose consumer goes away stops before its next window.

With the phrase cache, a text unit whose audio is cached (`phrase_cache.py`) is played from there, skipping all
of that; a unit synthesised completely is stored. Pre-rendering (`prerender`) fills the cache with jobs due at
infinity, one at a time, submitted only while no stream is active.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np

from ..audio.formats import AudioFormat, content_type
from ..config import SynthesisConfig
from ..health import HealthPart, HealthSnapshot, StreamsHealth
from ..health_board import HealthBoard
from ..text.phoneme_ids import encode_phonemes
from ..text.phonemes import Phonemizer
from ..text.sentences import text_units
from ..text.units import phoneme_units
from .admission import Admission, Busy, default_max_streams
from .phrase_cache import PhraseCache, PhraseKey, normalised_text
from .request import LENGTH_RANGE, NOISE_RANGE, RequestError, SynthesisRequest, checked_text
from .request_stats import Outcome, RequestStats
from .voice_health import voice_health
from .voice_request import SentencePlan, VoiceRequest
from .voice_runtime import LoadedVoice, SynthesisParams
from .word_timings import SpokenChunk, UnitWords, WordTiming, unit_words
from .workers import DeadlineWorkers

log = logging.getLogger(__name__)
T = TypeVar("T")
Q = TypeVar("Q")

CACHED_CHUNK_SAMPLES = 16_384
"""Cached audio is played in pieces of this many samples (~0.7 s at 22,050 Hz)."""
IDLE_POLL_S = 0.05
"""How often pre-rendering looks whether the streams have ended."""


@dataclass(frozen=True)
class AudioChunk:
    samples: np.ndarray
    """Mono float32 in [-1, 1]."""
    sample_rate: int
    words: tuple[WordTiming, ...] = ()
    """With word timings asked for: the words of the unit of text whose audio starts with this chunk."""


@dataclass(frozen=True)
class SpeechTimings:
    """When each word is said, without the audio (`SpeechEngine.timings`)."""

    words: tuple[WordTiming, ...]
    duration: float
    """Seconds of audio the same request makes."""


@dataclass(frozen=True)
class _UnitPlan:
    """One unit of text encoded: its sentences, and its words in frames when they were asked for."""

    sentences: list[SentencePlan]
    words: UnitWords | None


@dataclass(frozen=True)
class StreamFacts:
    """What a transport tells its client before any audio: its headers, or its start message."""

    audio_format: AudioFormat
    content_type: str
    sample_rate: int
    voice: str
    backend: str
    """Where the decoder runs: 'npu' or 'cpu'."""
    cache: str | None = None
    """How much of the text is in the phrase cache: 'hit' (all of it), 'miss' (none), 'partial'; None when the
    cache is off or bypassed (`synthesis.vary` without a seed) or the text is still to come."""


@dataclass(frozen=True)
class PreparedRequest:
    voice: LoadedVoice
    text: str
    params: SynthesisParams
    seed: int
    facts: StreamFacts
    transport: str
    """Who asked ('http', 'websocket', 'wyoming', …): the `transport` label of the request statistics."""
    cacheable: bool = False
    """Its units may come from and go to the phrase cache (the cache is on and the seed is fixed)."""


@dataclass
class StreamTally:
    """Where one stream's text units came from, counted as they are played. Event-loop thread only."""

    cached_units: int = 0
    synthesised_units: int = 0


@dataclass(frozen=True)
class _Part:
    """Audio of one sentence of a text unit, waiting to be played: its windows, submitted (or read) already."""

    windows: list[asyncio.Future[np.ndarray]]
    ends_unit: bool
    from_cache: bool = False
    store_as: PhraseKey | None = None
    """The unit's key when it is synthesised to be cached."""
    words: tuple[WordTiming, ...] = ()
    """With word timings asked for: the unit's words, on the first chunk of its first sentence."""


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
    phrase_cache: PhraseCache | None = None
    """Sentence audio kept across requests and restarts; None when `cache.enabled` is off."""

    def __post_init__(self) -> None:
        self.inference_threads = self.settings.inference_threads or os.cpu_count() or 1
        self._workers = DeadlineWorkers(self.inference_threads)
        max_streams = self.settings.max_streams or default_max_streams(self.npu_cores)
        self.admission = Admission(max_streams, self.settings.queue_s)
        """Every transport takes a slot here (through `slot`) before it starts a stream (event-loop thread only)."""
        self.requests = RequestStats()
        """Finished requests of every transport (event-loop thread only)."""

    def close(self) -> None:
        self._workers.shutdown(wait=True, cancel_futures=True)
        if self.phrase_cache is not None:
            self.phrase_cache.close()
        for voice in self.voices.values():
            voice.close()

    # -- requests -------------------------------------------------------------------------------------

    def prepare(self, request: SynthesisRequest, audio_format: AudioFormat = AudioFormat.WAV, *,
                text_follows: bool = False, transport: str = "direct") -> PreparedRequest:
        """Checks a request; raises RequestError naming what is wrong (counted as a bad request of
        `transport`). Nothing is synthesised yet. `text_follows`: more text will be streamed into the request,
        so it may start empty. `transport`: 'direct' for callers that are not a transport (tests, benchmarks)."""
        try:
            return self._prepare(request, audio_format, text_follows, transport)
        except RequestError:
            self.requests.record(transport, audio_format.value, Outcome.BAD_REQUEST)
            raise

    def _prepare(self, request: SynthesisRequest, audio_format: AudioFormat, text_follows: bool,
                 transport: str) -> PreparedRequest:
        text = checked_text(request.text if isinstance(request.text, str) else "")
        if not text.strip() and not text_follows:
            raise RequestError("empty_text", "text is empty")
        if len(text) > self.max_text_chars:
            raise RequestError(
                "text_too_long", f"text has {len(text)} characters; the limit is {self.max_text_chars}"
            )
        name = request.voice or self.default_voice
        voice = self.voices.get(name)
        if voice is None:
            raise RequestError("unknown_voice", f"unknown voice {name!r}; see /api/voices")
        try:
            speaker_id = voice.config.speaker_id(request.speaker)
        except KeyError as e:
            raise RequestError("unknown_speaker", str(e.args[0])) from None
        config = voice.config
        params = SynthesisParams(
            speaker_id=speaker_id,
            length_scale=_in_range("length_scale", request.length_scale, config.length_scale, LENGTH_RANGE),
            noise_scale=_in_range("noise_scale", request.noise_scale, config.noise_scale, NOISE_RANGE),
            noise_w=_in_range("noise_w", request.noise_w, config.noise_w, NOISE_RANGE),
        )
        if request.seed is not None:
            seed = request.seed
        elif self.settings.vary:
            seed = secrets.randbits(63)
        else:
            seed = self.settings.seed
        cacheable = self.phrase_cache is not None and (request.seed is not None or not self.settings.vary)
        rate = config.sample_rate
        facts = StreamFacts(audio_format, content_type(audio_format, rate), rate, name, voice.decoder.name)
        prepared = PreparedRequest(voice, text, params, seed, facts, transport, cacheable)
        return dataclasses.replace(prepared, facts=dataclasses.replace(facts, cache=self._cache_outcome(prepared)))

    def _cache_outcome(self, prepared: PreparedRequest) -> str | None:
        """hit, miss or partial for the units of the text known now, from the cache's index (no file is read)."""
        if self.phrase_cache is None or not prepared.cacheable or not prepared.text.strip():
            return None
        found = [self.phrase_cache.contains(self._unit_key(prepared, piece)) for piece in text_units(prepared.text)]
        return "hit" if all(found) else "partial" if any(found) else "miss"

    def _unit_key(self, prepared: PreparedRequest, piece: str) -> PhraseKey:
        params = prepared.params
        return PhraseKey(prepared.voice.files.onnx_sha256, prepared.voice.decoder.name, params.speaker_id,
                         (params.length_scale, params.noise_scale, params.noise_w), prepared.seed,
                         normalised_text(piece))


    @asynccontextmanager
    async def slot(self, prepared: PreparedRequest) -> AsyncIterator[float]:
        """Holds an admission slot for `prepared` (Busy, counted as rejected, after `synthesis.queue_s`
        without one); gives the monotonic time the request asked for it, where its wait for audio starts."""
        asked_at = time.monotonic()
        async with AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(self.admission.slot())
            except Busy:
                self.requests.record(prepared.transport, prepared.facts.audio_format.value, Outcome.REJECTED_BUSY)
                raise
            yield asked_at

    async def stream(
        self, prepared: PreparedRequest, more_text: AsyncIterator[str] | None = None,
        tally: StreamTally | None = None, *, word_timings: bool = False
    ) -> AsyncIterator[AudioChunk]:
        """Audio windows in order, for `prepared.text` and then each piece of `more_text` (text arriving from
        a language model, already cut at sentence ends). Closing the iterator (client gone, barge-in) stops
        the work: windows already running finish, no further one starts. `word_timings`: the first chunk of
        each unit of text carries that unit's words, timed from the start of the stream.

        The windows of a sentence are submitted together, so a lone request decodes on every worker at once,
        while the next sentence is encoded; they are emitted in order. `tally` counts the units played from
        the cache and synthesised."""
        tally = tally if tally is not None else StreamTally()
        cache = self.phrase_cache if prepared.cacheable else None
        voice = prepared.voice
        request = voice.start_request(prepared.params, prepared.seed)
        pace = _Pace(time.monotonic(), request.sample_rate)
        outstanding: set[asyncio.Future[Any]] = set()
        # One sentence's windows wait here (submitted already) while the one before is emitted.
        sentences: asyncio.Queue[_Part | None] = asyncio.Queue(maxsize=1)

        def submit(deadline: float, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
            future = asyncio.wrap_future(self._workers.submit_by(deadline, fn, *args))
            outstanding.add(future)
            future.add_done_callback(_settled)
            future.add_done_callback(outstanding.discard)
            return future

        async def plan_ahead() -> None:
            async for piece in _pieces(prepared.text, more_text):
                key = self._unit_key(prepared, piece) if cache is not None else None
                if key is not None and cache is not None:
                    if not cache.contains(key):
                        cache.note_miss()
                    elif (cached := await asyncio.to_thread(cache.load, key)) is not None:
                        words: tuple[WordTiming, ...] = ()
                        if word_timings:  # the cache keeps audio: the words come from the prelude alone
                            timed = await submit(pace.encode_due(), self._time_unit, request, piece)
                            words = timed.placed(pace.planned, voice.samples_per_frame, request.sample_rate)
                        pace.lookahead_from = pace.planned
                        pace.planned += cached.size
                        await sentences.put(_Part(_ready_chunks(cached), ends_unit=True, from_cache=True,
                                                  words=words))
                        continue
                # Phonemes and encoding in one job: a new request waits for a free worker once, not twice.
                unit = await submit(pace.encode_due(), self._plan_unit, request, piece, word_timings)
                # The windows emit exactly `frames × samples_per_frame` each sentence: the unit starts here.
                words = () if unit.words is None else unit.words.placed(pace.planned, voice.samples_per_frame,
                                                                        request.sample_rate)
                plans = unit.sentences
                if not plans:  # nothing to say (punctuation only): still a unit, cached as silence
                    await sentences.put(_Part([], ends_unit=True, store_as=key))
                for number, plan in enumerate(plans, 1):
                    windows = []
                    for index, window in enumerate(plan.windows):
                        if index == max(1, len(plan.windows) - 2) or len(plan.windows) == 1:
                            pace.lookahead_from = pace.planned
                        windows.append(submit(pace.window_due(), request.decode, plan, window))
                        pace.planned += plan.window_samples(window)
                    await sentences.put(_Part(windows, ends_unit=number == len(plans), store_as=key, words=words))
                    words = ()
            await sentences.put(None)

        self._track(+1)
        planner = asyncio.create_task(plan_ahead())
        finished = False
        unit_audio: list[np.ndarray] = []
        try:
            while (part := await _next_or_raise(sentences, planner)) is not None:
                for index, window in enumerate(part.windows):
                    audio = await window
                    if not part.from_cache:
                        self.counters.windows += 1
                    if part.store_as is not None:
                        unit_audio.append(audio)
                    yield AudioChunk(audio, request.sample_rate, part.words if index == 0 else ())
                if not part.ends_unit:
                    continue
                if part.from_cache:
                    tally.cached_units += 1
                else:
                    tally.synthesised_units += 1
                # A unit part decoded on the NPU and part on the CPU (fallback) is not what its key promises.
                if cache is not None and part.store_as is not None and not request.fallback.fallen_back:
                    cache.store_later(part.store_as, _joined(unit_audio), request.sample_rate)
                unit_audio = []
            finished = True
        finally:
            planner.cancel()
            for future in list(outstanding):
                future.cancel()  # a job not started yet is dropped by the workers
            self._track(-1, finished)

    async def timings(self, prepared: PreparedRequest) -> SpeechTimings:
        """The words of `prepared.text` with the times they are said at in the audio `stream` makes for the
        same request, and that audio's length, from the prelude alone (no flow, no decoder). The caller holds
        an admission slot; leaving (cancelled) drops the units not started."""
        voice = prepared.voice
        request = voice.start_request(prepared.params, prepared.seed)
        due = time.monotonic()
        futures = [asyncio.wrap_future(self._workers.submit_by(due, self._time_unit, request, piece))
                   for piece in text_units(prepared.text)]
        try:
            units = await asyncio.gather(*futures)
        finally:
            for future in futures:
                future.cancel()
        words: list[WordTiming] = []
        samples = 0
        for unit in units:
            words.extend(unit.placed(samples, voice.samples_per_frame, request.sample_rate))
            samples += unit.frames * voice.samples_per_frame
        return SpeechTimings(tuple(words), samples / request.sample_rate)

    async def prerender(self, prepared: PreparedRequest) -> int:
        """Renders the units of `prepared.text` that are not cached into the cache, at the lowest priority: one
        job at a time, each due at infinity and submitted only while no stream is active, so a live request
        waits at most for the one job already running. Returns the units rendered."""
        cache = self.phrase_cache
        if cache is None or not prepared.cacheable:
            return 0
        request = prepared.voice.start_request(prepared.params, prepared.seed)
        rendered = 0
        for piece in text_units(prepared.text):
            key = self._unit_key(prepared, piece)
            if cache.contains(key):
                continue
            audio = []
            unit = await self._in_background(self._plan_unit, request, piece)
            for plan in unit.sentences:
                for window in plan.windows:
                    audio.append(await self._in_background(request.decode, plan, window))
            if not request.fallback.fallen_back:
                await asyncio.wrap_future(cache.store_later(key, _joined(audio), request.sample_rate))
            rendered += 1
        return rendered

    async def _in_background(self, fn: Callable[..., T], *args: Any) -> T:
        while self.counters.active_streams:
            await asyncio.sleep(IDLE_POLL_S)
        return await asyncio.wrap_future(self._workers.submit_by(math.inf, fn, *args))

    def _plan_unit(self, request: VoiceRequest, text: str, word_timings: bool = False) -> _UnitPlan:
        chunks = self.sentence_chunks(request.voice, text)
        plans = [request.encode(chunk.ids) for chunk in chunks]
        if not word_timings:
            return _UnitPlan(plans, None)
        words = unit_words(self.phonemizer, request.voice.config.espeak_voice, text, chunks,
                           [p.durations for p in plans], [p.frames for p in plans])
        return _UnitPlan(plans, words)

    def _time_unit(self, request: VoiceRequest, text: str) -> UnitWords:
        chunks = self.sentence_chunks(request.voice, text)
        timed = [request.durations(chunk.ids) for chunk in chunks]
        return unit_words(self.phonemizer, request.voice.config.espeak_voice, text, chunks,
                          [durations for durations, _ in timed], [frames for _, frames in timed])

    def sentence_ids(self, voice: LoadedVoice, text: str) -> list[list[int]]:
        """Phoneme ids of each bounded unit of `text` (blocking: espeak-ng), one list per encoder call."""
        return [chunk.ids for chunk in self.sentence_chunks(voice, text)]

    def sentence_chunks(self, voice: LoadedVoice, text: str) -> list[SpokenChunk]:
        """The phonemes and ids of each encoder call `text` takes (blocking: espeak-ng)."""
        found = []
        for unit in text_units(text):  # `text` is usually one unit already; bounded here for every caller
            for sentence in self.phonemizer.sentences(unit, voice.config.espeak_voice):
                for phonemes in phoneme_units(sentence):  # numbers expand: "123…" is ~10 phonemes a character
                    ids, spans = encode_phonemes(phonemes, voice.config.phoneme_id_map)
                    if len(ids) > 3:  # more than BOS, PAD, EOS: something to say
                        found.append(SpokenChunk(phonemes, ids, spans))
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
        """True if an inference worker picks up a trivial job within the timeout, or all are busy with jobs
        younger than `synthesis.stuck_job_s` (the pool is not wedged)."""
        return await self._workers.responsive(timeout_s, self.settings.stuck_job_s)

    def health(self) -> HealthSnapshot:
        """Everything /healthz, the status line and the TXT record show. Event-loop thread only."""
        counters, admission = self.counters, self.admission
        streams = StreamsHealth(
            active=counters.active_streams, completed=counters.completed, cancelled=counters.cancelled,
            max=admission.max_streams, waiting=admission.waiting, rejected_busy=admission.counters.rejected,
            windows=counters.windows)
        voices = tuple(voice_health(voice, self.backend_reasons.get(name, "")) for name, voice in self.voices.items())
        cache = self.phrase_cache.health() if self.phrase_cache is not None else None
        snapshot = self.health_board.snapshot(self.default_voice, voices, streams, cache)
        return replace(snapshot, requests=self.requests.health())

    def describe_voices(self) -> list[dict]:
        described = []
        for name, voice in self.voices.items():
            config = voice.config
            described.append({
                "name": name,
                "language": config.language,
                "espeak_voice": config.espeak_voice,
                "sample_rate": config.sample_rate,
                "num_speakers": config.num_speakers,
                "speakers": config.speaker_names,
                "default": name == self.default_voice,
                "backend": voice.decoder.name,
                "defaults": {"length_scale": config.length_scale, "noise_scale": config.noise_scale,
                             "noise_w": config.noise_w},
            })
        return described


@dataclass
class _Pace:
    """When a stream's jobs are due: when its listener would run out of audio, had playback started with the
    request. A window is due once the audio before it has played. The next sentence's phonemes and encoding are
    due with the last window but one of the sentence before (never with its first): they run beside its last
    two windows, so a lone request's workers do not wait for them, while a stream ahead of its listener still
    yields to the jobs of streams that are not. (Due with the sentence's first window, a lone paragraph took
    3.1 s but three streams started together fell 0.8 s behind; with its last window, 3.5 s and 0.06 s.)"""

    started: float
    sample_rate: int
    planned: int = 0
    """Samples of every window submitted so far."""
    lookahead_from: int = 0
    """Samples before the window of the last sentence submitted that the next sentence's encoding goes with."""

    def window_due(self) -> float:
        return self.started + self.planned / self.sample_rate

    def encode_due(self) -> float:
        return self.started + self.lookahead_from / self.sample_rate


async def _pieces(text: str, more_text: AsyncIterator[str] | None) -> AsyncIterator[str]:
    """Bounded synthesis units, in order: each is phonemized and encoded on its own, so memory and the wait
    before the first audio do not grow with the text."""
    for piece in text_units(text):
        yield piece
    if more_text is not None:
        async for chunk in more_text:
            for piece in text_units(chunk):
                yield piece


async def _next_or_raise(queue: asyncio.Queue[Q], producer: asyncio.Task[None]) -> Q:
    """The next item, or the producer's exception if it failed (instead of waiting forever)."""
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


def _ready_chunks(samples: np.ndarray) -> list[asyncio.Future[np.ndarray]]:
    """Cached audio as windows already done, in pieces about a decoder window long (encoders see what they
    usually see)."""
    loop = asyncio.get_running_loop()
    chunks = []
    for start in range(0, max(samples.size, 1), CACHED_CHUNK_SAMPLES):
        future: asyncio.Future[np.ndarray] = loop.create_future()
        future.set_result(samples[start:start + CACHED_CHUNK_SAMPLES])
        chunks.append(future)
    return chunks


def _joined(audio: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(audio) if audio else np.zeros(0, dtype=np.float32)


def _settled(future: asyncio.Future[Any]) -> None:
    """Marks a job's failure as seen: when the stream stops at its first failed window, the failures of the
    windows submitted beside it are not logged again as "never retrieved"."""
    if not future.cancelled():
        future.exception()


def _in_range(name: str, value: float | None, default: float, bounds: tuple[float, float]) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RequestError("invalid_option", f"{name} must be a number")
    low, high = bounds
    if not low <= value <= high:
        raise RequestError("out_of_range", f"{name} must be between {low} and {high}, got {value}")
    return float(value)
