"""Wyoming (Home Assistant's protocol for voice services) over TCP: the one file that knows the `wyoming` library.

Client -> server, one connection at a time, events in order:
  describe                                  -> info (from the voice catalog: answered while the voices load)
  synthesize {text, voice?: {name, speaker?} | {language}}
                                            -> audio-start, audio-chunk (each encoded window), audio-stop
  synthesize-start {voice?}, synthesize-chunk {text}*, synthesize {…} (compatibility copy: ignored inside a
  stream), synthesize-stop                  -> audio-start, audio-chunk* (each sentence as soon as it is
                                               complete), audio-stop, synthesize-stopped
Anything refused (unknown voice, malformed or oversized event, busy, voices still loading) is answered with an
`error` event {text, code} and the connection carries on. Audio is s16le mono at the voice's rate, one
format per stream (Home Assistant writes one WAV header from the first audio-start).

A synthesize that arrives while the voices load is refused at once with code `loading` rather than held: the
daemon announces itself over mDNS only once they are loaded, so only a client that found it by hand (or a
restart under Home Assistant's feet) meets it, and an immediate error is clearer than a long silence.

Limits, as for HTTP and WebSocket clients: `server.max_connections` open connections (one more is sent an
`error` event and closed), events of at most `server.max_ws_message_bytes` (larger ones are read past and
refused), text of at most `server.max_text_chars` per request or stream, admission control per utterance, a
connection silent for `server.ws_idle_timeout_s` with nothing playing is closed, and an event's body must
arrive within `server.body_timeout_s`. There is no authentication: the listener serves the LAN only and the
tunnel never carries it.

Threading: everything here runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice, TtsVoiceSpeaker
from wyoming.server import AsyncEventHandler, AsyncTcpServer
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from .. import __version__
from ..app_keys import CONFIG, ENGINE, WYOMING_PORT
from ..audio.formats import AudioFormat, EncoderSettings
from ..config import ApplianceConfig
from ..health import WyomingHealth
from ..synthesis.admission import Busy
from ..synthesis.engine import PreparedRequest, SpeechEngine
from ..synthesis.output import play
from ..synthesis.request import RequestError, SynthesisRequest, checked_text
from ..synthesis.streamed_text import StreamedText
from ..voices.catalog import VoiceFiles, discover_voices
from .listener import ListenError

log = logging.getLogger(__name__)

SAMPLE_WIDTH: Final = 2
CHANNELS: Final = 1
DISCARD_PIECE_BYTES: Final = 64 * 1024
ATTRIBUTION: Final = Attribution(name="Piper voices on an RK3588 speech appliance",
                                 url="https://github.com/OHF-Voice/piper1-gpl")
PROGRAM_NAME: Final = "rk-speech-appliance"

EngineSource = Callable[[], SpeechEngine | None]
"""The loaded engine, or None while the voices load."""


class EventRefused(Exception):
    """An event we cannot take; answered with an `error` event, and the connection carries on."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


@dataclass(frozen=True)
class WyomingLimits:
    max_connections: int
    max_event_bytes: int
    """Largest data + payload of one event (and its header line)."""
    max_text_chars: int
    idle_timeout_s: float
    body_timeout_s: float

    @classmethod
    def of(cls, config: ApplianceConfig) -> WyomingLimits:
        server = config.server
        return cls(server.max_connections, server.max_ws_message_bytes, server.max_text_chars,
                   server.ws_idle_timeout_s, server.body_timeout_s)


def describe_info(voices: dict[str, VoiceFiles]) -> Info:
    """One TTS program with every voice of the catalog (read from the voices' JSON, no model loaded)."""
    tts_voices = []
    for name, files in voices.items():
        config = files.config
        tts_voices.append(TtsVoice(
            name=name,
            description=name,
            attribution=ATTRIBUTION,
            installed=True,
            version=__version__,
            languages=[config.language] if config.language else [],
            speakers=[TtsVoiceSpeaker(name=s) for s in config.speaker_names] or None,
        ))
    program = TtsProgram(
        name=PROGRAM_NAME,
        description="Streaming Piper text to speech (NPU decoder on RK3588)",
        attribution=ATTRIBUTION,
        installed=True,
        version=__version__,
        voices=tts_voices,
        supports_synthesize_streaming=True,
    )
    return Info(tts=[program])


def voice_for_language(engine: SpeechEngine, language: str) -> str:
    """The default voice if it speaks `language` ("en_US", "en-us" or "en"), else the first voice that does."""
    wanted = language.replace("-", "_").lower()
    names = [engine.default_voice, *(n for n in engine.voices if n != engine.default_voice)]
    for exact in (True, False):
        for name in names:
            have = engine.voices[name].config.language.replace("-", "_").lower()
            if have == wanted if exact else have.split("_")[0] == wanted.split("_")[0]:
                return name
    raise EventRefused("unknown_language", f"no voice speaks {language!r}")


def synthesis_request(engine: SpeechEngine, data: dict[str, Any], text: str) -> SynthesisRequest:
    """`data`'s optional `voice` ({name, speaker} or {language}) → our request for `text`."""
    voice = data.get("voice")
    if voice is None:
        return SynthesisRequest(text=text)
    if not isinstance(voice, dict):
        raise EventRefused("invalid_voice", "voice must be an object: {name, speaker} or {language}")
    name, speaker, language = voice.get("name"), voice.get("speaker"), voice.get("language")
    if name is not None and not isinstance(name, str):
        raise EventRefused("invalid_voice", "voice.name must be a string")
    if speaker is not None and not isinstance(speaker, str | int):
        raise EventRefused("invalid_voice", "voice.speaker must be a string")
    if name is None and isinstance(language, str):
        name = voice_for_language(engine, language)
    return SynthesisRequest(text=text, voice=name, speaker=speaker)


class WyomingConnection(AsyncEventHandler):
    """One client connection: events are handled in order; a stream's audio plays in a task beside the
    reading, so each sentence is spoken while the next is still arriving."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: WyomingServer) -> None:
        super().__init__(reader, writer)
        self._server = server
        self._limits = server.limits
        self._write_lock = asyncio.Lock()
        self._stream: _Stream | None = None

    # -- reading --------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Like the library's loop, with our limits: bounded events, timeouts, and errors instead of a hang-up."""
        try:
            while True:
                try:
                    event = await self._read_event()
                except EventRefused as e:
                    await self._error(e.code, e.text)
                    continue
                if event is None:
                    break
                try:
                    if not await self.handle_event(event):
                        break
                except EventRefused as e:
                    await self._error(e.code, e.text)
        except (ConnectionError, asyncio.IncompleteReadError):
            log.info("wyoming client went away")
        except TimeoutError:
            log.info("wyoming client too slow sending an event's body (%g s); closing it",
                     self._limits.body_timeout_s)
        except Exception:
            log.exception("wyoming connection failed; closing it")
        finally:
            await self.disconnect()
            self.writer.close()

    async def _read_event(self) -> Event | None:
        """The next event; None at the end of the connection (or after an idle timeout)."""
        try:
            line = await self._next_line()
        except TimeoutError:
            log.info("wyoming connection idle for %g s; closing it", self._limits.idle_timeout_s)
            return None
        except ValueError:  # a line over the reader's limit: nothing to resynchronise on
            await self._error("event_too_large", f"events are limited to {self._limits.max_event_bytes} bytes")
            return None
        if not line:
            return None
        try:
            header = json.loads(line)
        except ValueError:
            raise EventRefused("malformed_event", "an event header must be one line of JSON") from None
        if not isinstance(header, dict) or not isinstance(header.get("type"), str):
            raise EventRefused("malformed_event", "an event header must be a JSON object with a string type")
        data_length, payload_length = header.get("data_length") or 0, header.get("payload_length") or 0
        if not isinstance(data_length, int) or not isinstance(payload_length, int) or min(data_length,
                                                                                           payload_length) < 0:
            raise EventRefused("malformed_event", "data_length and payload_length must be whole numbers")
        if data_length + payload_length > self._limits.max_event_bytes:
            await self._discard(data_length + payload_length)
            raise EventRefused("event_too_large", f"events are limited to {self._limits.max_event_bytes} bytes")
        data = header.get("data") or {}
        if not isinstance(data, dict):
            raise EventRefused("malformed_event", "an event's data must be a JSON object")
        async with asyncio.timeout(self._limits.body_timeout_s):
            if data_length:
                try:
                    more = json.loads(await self.reader.readexactly(data_length))
                except ValueError:
                    raise EventRefused("malformed_event", "an event's data must be a JSON object") from None
                if not isinstance(more, dict):
                    raise EventRefused("malformed_event", "an event's data must be a JSON object")
                data.update(more)
            payload = await self.reader.readexactly(payload_length) if payload_length else None
        return Event(type=header["type"], data=data, payload=payload)

    async def _next_line(self) -> bytes:
        """The next header line; TimeoutError once the client has been silent for the idle timeout with
        nothing playing (a stream's audio may play for longer than that while its client waits)."""
        line = asyncio.ensure_future(self.reader.readline())
        try:
            while True:
                done, _ = await asyncio.wait([line], timeout=self._limits.idle_timeout_s)
                if done:
                    return line.result()
                if not self._playing:
                    raise TimeoutError
        finally:
            line.cancel()

    async def _discard(self, size: int) -> None:
        async with asyncio.timeout(self._limits.body_timeout_s):
            while size > 0:
                piece = await self.reader.read(min(size, DISCARD_PIECE_BYTES))
                if not piece:
                    raise ConnectionError("closed inside an event")
                size -= len(piece)

    @property
    def _playing(self) -> bool:
        return self._stream is not None and self._stream.task is not None and not self._stream.task.done()

    # -- events ---------------------------------------------------------------------------------------

    async def handle_event(self, event: Event) -> bool:
        try:
            if Describe.is_type(event.type):
                await self.write_event(self._server.info().event())
            elif Synthesize.is_type(event.type):
                if self._stream is None:  # inside a stream it is the compatibility copy of the chunks
                    await self._synthesize(event.data)
            elif SynthesizeStart.is_type(event.type):
                await self._start_stream(event.data)
            elif SynthesizeChunk.is_type(event.type):
                self._stream_text(event.data)
            elif SynthesizeStop.is_type(event.type):
                await self._stop_stream()
            else:
                raise EventRefused("unknown_event", f"this server does not handle {event.type!r} events")
        except RequestError as e:
            raise EventRefused(e.code, e.message) from None
        except KeyError as e:
            raise EventRefused("malformed_event", f"{event.type} needs {e.args[0]!r}") from None
        return True

    async def _synthesize(self, data: dict[str, Any]) -> None:
        text = data["text"]
        if not isinstance(text, str):
            raise EventRefused("invalid_text", "text must be a string")
        engine = self._server.engine()
        prepared = engine.prepare(synthesis_request(engine, data, text), AudioFormat.PCM)
        await self._play(engine, prepared, None)

    async def _start_stream(self, data: dict[str, Any]) -> None:
        if self._stream is not None:
            raise EventRefused("stream_open", "a synthesize stream is open already; send synthesize-stop first")
        stream = self._stream = _Stream(StreamedText(self._limits.max_text_chars))
        try:
            engine = self._server.engine()
            prepared = engine.prepare(synthesis_request(engine, data, ""), AudioFormat.PCM, text_follows=True)
        except (EventRefused, RequestError):
            # Told once; the chunks and the compatibility synthesize that follow are swallowed, and the stop
            # still ends the stream with synthesize-stopped.
            stream.refused = True
            raise
        stream.task = asyncio.create_task(self._play(engine, prepared, stream.text.sentences()),
                                          name="wyoming stream")

    def _stream_text(self, data: dict[str, Any]) -> None:
        stream = self._stream
        if stream is None:
            raise EventRefused("no_stream", "synthesize-chunk comes between synthesize-start and synthesize-stop")
        text = data["text"]
        if not isinstance(text, str):
            raise EventRefused("invalid_text", "text must be a string")
        text = checked_text(text)
        if stream.refused:
            return
        try:
            stream.text.add(text)
        except RequestError:
            stream.refused = True
            if stream.task is not None:
                stream.task.cancel()
            raise

    async def _stop_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            raise EventRefused("no_stream", "synthesize-stop without synthesize-start")
        stream.text.end()
        if stream.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await stream.task
        await self.write_event(SynthesizeStopped().event())

    async def _play(self, engine: SpeechEngine, prepared: PreparedRequest, more: AsyncIterator[str] | None) -> None:
        """One utterance: admission, then audio-start, a chunk per encoded window, audio-stop. Failures are
        told as `error` events; only a lost connection ends the connection."""
        rate = prepared.facts.sample_rate

        async def send(data: bytes) -> None:
            await self.write_event(AudioChunk(rate=rate, width=SAMPLE_WIDTH, channels=CHANNELS, audio=data).event())

        try:
            async with engine.admission.slot():
                await self.write_event(AudioStart(rate=rate, width=SAMPLE_WIDTH, channels=CHANNELS).event())
                await play(engine, prepared, send, EncoderSettings(), more)
                await self.write_event(AudioStop().event())
        except Busy as e:
            await self._error("busy", str(e))
        except RequestError as e:
            await self._error(e.code, e.message)
        except ConnectionError:
            raise
        except Exception as e:  # StreamFailed, or a bug: the connection carries on
            log.warning("wyoming utterance failed: %s: %s", type(e).__name__, e)
            await self._error("synthesis_failed", "synthesis failed; see the appliance's log")

    # -- writing --------------------------------------------------------------------------------------

    async def write_event(self, event: Event) -> None:
        async with self._write_lock:
            await async_write_event(event, self.writer)

    async def _error(self, code: str, text: str) -> None:
        self._server.errors += 1
        with contextlib.suppress(ConnectionError):
            await self.write_event(Error(text=text, code=code).event())

    async def disconnect(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None and stream.task is not None:
            stream.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await stream.task


class _Stream:
    """A synthesize-start … synthesize-stop stream: its text buffer and the task playing it."""

    def __init__(self, text: StreamedText) -> None:
        self.text = text
        self.refused = False
        """Refused (a bad voice, too much text): what follows up to the stop is swallowed."""
        self.task: asyncio.Task[None] | None = None
        """Plays the stream; None when it was refused at the start."""


class WyomingServer(AsyncTcpServer):
    """The Wyoming listener: bound before the voices load (so `describe` is answered during loading), with
    a cap on open connections. `engine` gives the loaded engine, or None while it loads."""

    def __init__(self, config: ApplianceConfig, voices: dict[str, VoiceFiles], engine: EngineSource) -> None:
        super().__init__(config.wyoming.host, config.wyoming.port)
        self.limits = WyomingLimits.of(config)
        self._catalog = voices
        self._engine = engine
        self._info = describe_info(voices)
        self.refused = 0
        """Connections closed at once at the connection cap, since start-up."""
        self.errors = 0
        """`error` events sent, since start-up."""

    def info(self) -> Info:
        """From the catalog while loading; then only the voices the engine loaded (a broken one is left out)."""
        engine = self._engine()
        if engine is not None and set(engine.voices) != set(self._catalog):
            self._catalog = {name: files for name, files in self._catalog.items() if name in engine.voices}
            self._info = describe_info(self._catalog)
        return self._info

    def engine(self) -> SpeechEngine:
        engine = self._engine()
        if engine is None:
            raise EventRefused("loading", "the voices are still loading; retry in a few seconds")
        return engine

    @property
    def bound_port(self) -> int:
        """The port actually bound (the configured one may be 0 in tests)."""
        assert self._server is not None and self._server.sockets, "start() first"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:  # type: ignore[override]
        try:
            self._server = await asyncio.start_server(self._connected, host=self.host, port=self.port,
                                                      limit=self.limits.max_event_bytes + 1024)
        except OSError as e:
            why = "the port is in use" if e.errno == 98 else (e.strerror or str(e))
            raise ListenError(f"cannot listen on {self.host}:{self.port} (wyoming): {why}") from e
        log.info("wyoming: serving on tcp://%s:%d", self.host, self.bound_port)

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._handlers) >= self.limits.max_connections:
            self.refused += 1
            log.warning("wyoming connection cap (%d) reached; refused %d so far", self.limits.max_connections,
                        self.refused)
            with contextlib.suppress(ConnectionError):
                await async_write_event(Error(text="this listener has too many open connections; retry",
                                              code="too_many_connections").event(), writer)
            writer.close()
            return
        await self._handler_callback(lambda r, w: WyomingConnection(r, w, self), reader, writer)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    @property
    def open_connections(self) -> int:
        return len(self._handlers)

    def health(self) -> WyomingHealth:
        return WyomingHealth(listening=self._server is not None, host=self.host,
                             port=self.bound_port if self._server is not None else self.port,
                             connections=self.open_connections, refused=self.refused, errors=self.errors)


WYOMING: Final = web.AppKey("wyoming", WyomingServer)


async def wyoming_context(app: web.Application) -> AsyncIterator[None]:
    """For `app.cleanup_ctx`, before the engine's: the listener is bound and answers `describe` from the voice
    catalog while the engine loads, then serves synthesis with it. A busy port raises ListenError before any
    voice loads. Nothing when `wyoming.enabled` is false."""
    config = app[CONFIG]
    if not config.wyoming.enabled:
        yield
        return
    voices = await asyncio.to_thread(discover_voices, config.voices.folder)
    server = WyomingServer(config, voices, lambda: app.get(ENGINE))
    await server.start()
    app[WYOMING] = server
    app[WYOMING_PORT] = server.bound_port
    try:
        yield
    finally:
        await server.stop()


async def wyoming_health_context(app: web.Application) -> AsyncIterator[None]:
    """For `app.cleanup_ctx`, after the engine's: /healthz shows the listener (started before the engine)."""
    server = app.get(WYOMING)
    board = app[ENGINE].health_board
    board.watch_wyoming(server)
    try:
        yield
    finally:
        board.watch_wyoming(None)
