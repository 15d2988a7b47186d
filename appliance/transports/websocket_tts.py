"""WebSocket `GET /ws/tts`: JSON control messages in, binary audio frames out (never base64).

Client -> server
  {"type": "speak", "text": "...", "id"?, voice?, speaker?, length_scale?, noise_scale?, noise_w?, format?, seed?,
   timings?}
  {"type": "text", "text": "..."}  (text streamed from a language model; the first one may carry options)
  {"type": "flush"}                (end of the streamed text: speak what remains)
  {"type": "cancel"}               (barge-in: stop the audio now and drop what is queued)
Server -> client
  {"type": "start", "id", "format", "content_type", "sample_rate", "voice"} then binary frames (with
  "timings": true, each unit of text's {"type": "words", "id", "words": [{"word", "start", "end"}]} before its
  audio), then
  {"type": "end", "id", "audio_seconds", "synthesis_ms", "first_audio_ms", "cached_sentences"}
  (`cached_sentences`: text units played from the phrase cache)
  {"type": "cancelled", "ids": [...]}
  {"type": "error", "code", "message", "id"?, "retry_after"?}
Utterances play in the order they were asked for, one at a time; each takes a synthesis stream from the
engine's admission control when it starts (`busy` if none frees within the wait), at most `ws_max_queued`
wait behind it (`queue_full`), and a failed one is reported with its id while the next one plays.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from ..app_keys import CONFIG, ENGINE
from ..audio.formats import EncoderSettings
from ..synthesis.admission import Busy
from ..synthesis.engine import PreparedRequest, SpeechEngine
from ..synthesis.output import play
from ..synthesis.request import RequestError, SynthesisRequest, checked_text
from ..synthesis.streamed_text import StreamedText
from ..synthesis.word_timings import WordTiming
from .json_body import parse_json_object
from .options import OPTION_KEYS, parse_options, parse_request, refuse_unknown_keys
from .routes import ApiRoutes

log = logging.getLogger(__name__)

MESSAGE_KEYS = {
    "speak": ("type", "id", "text", "timings", *OPTION_KEYS),
    "text": ("type", "id", "text", "timings", *OPTION_KEYS),
    "flush": ("type", "id"),
    "cancel": ("type", "id"),
}
"""The keys each message type may carry; any other is refused by name (`unknown_option`)."""

HARD_LIMIT_FACTOR = 4
"""aiohttp closes the socket (1009) beyond this multiple of the message limit; below it we answer with an
error message and keep the connection."""


def add_websocket_routes(app: web.Application, routes: ApiRoutes) -> None:
    app.router.add_get(routes.ws_tts, websocket_tts)


@dataclass
class Utterance:
    id: str
    prepared: PreparedRequest
    received_at: float
    streamed: StreamedText | None = None
    """Text streamed with `text` messages, ended by the flush."""
    timings: bool = False
    """Send each unit's words (`words` messages) before its audio."""


@dataclass
class WsSession:
    """One connection: a reader of control messages and a player of the utterance queue. Another protocol on the
    same queue, admission and limits subclasses it and overrides `_on_message` (a JSON object received),
    `_play_one` (one admitted utterance) and `error` (how a refusal is told)."""

    ws: web.WebSocketResponse
    engine: SpeechEngine
    default_format: str
    encoder_settings: EncoderSettings
    max_text_chars: int
    max_message_bytes: int
    max_queued: int
    idle_timeout_s: float
    queue: asyncio.Queue[Utterance] = field(default_factory=asyncio.Queue)
    current: Utterance | None = None
    open_text: Utterance | None = None
    _send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _player: asyncio.Task[None] | None = None

    async def run(self) -> None:
        self._player = asyncio.create_task(self._play())
        try:
            while not self.ws.closed:
                try:
                    message = await self.ws.receive(timeout=self.idle_timeout_s)
                except TimeoutError:
                    if self.current is None and self.queue.empty() and self.open_text is None:
                        log.info("websocket idle for %g s; closing it", self.idle_timeout_s)
                        await self.ws.close(code=WSCloseCode.GOING_AWAY, message=b"idle")
                        break
                    continue
                if message.type == WSMsgType.TEXT:
                    await self._on_text(message.data)
                elif message.type == WSMsgType.BINARY:
                    await self.error("unexpected_binary", "send JSON text messages, not binary ones")
                elif message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    break
                elif message.type == WSMsgType.ERROR:
                    log.info("websocket closed with error: %s", self.ws.exception())
                    break
        finally:
            await self._stop_player()

    # -- incoming -------------------------------------------------------------------------------------

    async def _on_text(self, data: str) -> None:
        if len(data.encode()) > self.max_message_bytes:
            await self.error("message_too_large", f"messages are limited to {self.max_message_bytes} bytes")
            return
        try:
            message = parse_json_object(data)
        except RequestError as e:
            await self.error(e.code, e.message)
            return
        await self._on_message(message)

    async def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        try:
            if not isinstance(kind, str) or kind not in MESSAGE_KEYS:
                raise RequestError("unknown_type", "type must be speak, text, flush or cancel")
            refuse_unknown_keys(message, MESSAGE_KEYS[kind])
            if kind == "speak":
                await self._speak(message)
            elif kind == "text":
                await self._text(message)
            elif kind == "flush":
                self._flush()
            else:
                await self._cancel()
        except RequestError as e:
            await self.error(e.code, e.message, message.get("id") if isinstance(message.get("id"), str) else None)

    async def _speak(self, message: dict) -> None:
        request, audio_format = parse_request(message, self.default_format)
        prepared = self.engine.prepare(request, audio_format, transport="websocket")
        self._enqueue(Utterance(self._new_id(message), prepared, time.monotonic(), timings=_timings(message)))

    def _enqueue(self, utterance: Utterance) -> None:
        if self.queue.qsize() >= self.max_queued:
            raise RequestError("queue_full", f"{self.max_queued} utterances are already waiting on this "
                                             "connection; wait for one to end or cancel")
        self.queue.put_nowait(utterance)

    async def _text(self, message: dict) -> None:
        text = message.get("text")
        if not isinstance(text, str):
            raise RequestError("invalid_text", "text must be a string")
        text = checked_text(text)
        if self.open_text is None:
            options, audio_format = parse_options(message, self.default_format)
            prepared = self.engine.prepare(SynthesisRequest(text="", **options), audio_format, text_follows=True,
                                           transport="websocket")
            utterance = Utterance(self._new_id(message), prepared, time.monotonic(),
                                  streamed=StreamedText(self.max_text_chars), timings=_timings(message))
            self._enqueue(utterance)
            self.open_text = utterance
        assert self.open_text.streamed is not None
        try:
            self.open_text.streamed.add(text)
        except RequestError:
            await self._cancel()
            raise

    def _flush(self) -> None:
        if self.open_text is None or self.open_text.streamed is None:
            return
        self.open_text.streamed.end()
        self.open_text = None

    async def _cancel(self) -> None:
        """Barge-in: stop the audio being sent now, drop what is queued, then acknowledge."""
        ids = [self.current.id] if self.current else []
        while not self.queue.empty():
            ids.append(self.queue.get_nowait().id)
        self.open_text = None
        await self._stop_player()
        self.current = None
        self._player = asyncio.create_task(self._play())
        await self.send_json({"type": "cancelled", "ids": ids})

    async def _stop_player(self) -> None:
        """Cancels the player and waits for it; it never raises (a failure was reported when it happened)."""
        player, self._player = self._player, None
        if player is None:
            return
        player.cancel()
        try:
            await player
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("websocket player ended with an error")

    def _new_id(self, message: dict) -> str:
        given = message.get("id")
        return given if isinstance(given, str) and given else f"u{next(self._ids)}"

    # -- outgoing -------------------------------------------------------------------------------------

    async def _play(self) -> None:
        """Plays the queue, one utterance at a time. A failed utterance is reported with its id and the next
        one plays; only the socket closing ends this loop."""
        while not self.ws.closed:
            utterance = await self.queue.get()
            self.current = utterance
            try:
                async with self.engine.slot(utterance.prepared) as asked_at:
                    await self._play_one(utterance, asked_at)
            except RequestError as e:
                await self.error(e.code, e.message, utterance.id)
            except Busy as e:
                await self.error("busy", str(e), utterance.id, retry_after=e.retry_after_s)
            except ConnectionError:
                return  # the socket is gone: nobody to tell
            except Exception as e:  # StreamFailed, or a bug: either way the next utterance plays
                log.warning("websocket utterance %s failed: %s: %s", utterance.id, type(e).__name__, e)
                await self.error("synthesis_failed", "synthesis of this utterance failed; see the log",
                                 utterance.id)
            finally:
                self.current = None

    async def _play_one(self, utterance: Utterance, asked_at: float) -> None:
        facts = utterance.prepared.facts
        more = utterance.streamed.sentences() if utterance.streamed is not None else None
        await self.send_json({"type": "start", "id": utterance.id, "format": facts.audio_format.value,
                              "content_type": facts.content_type, "sample_rate": facts.sample_rate,
                              "voice": facts.voice})
        async def send_words(words: tuple[WordTiming, ...]) -> None:
            await self.send_json({"type": "words", "id": utterance.id, "words": [w.as_json() for w in words]})

        stats = await play(self.engine, utterance.prepared, self.send_bytes, self.encoder_settings, more,
                           send_words if utterance.timings else None, asked_at=asked_at)
        first_audio = stats.first_audio_at or time.monotonic()
        await self.send_json({
            "type": "end",
            "id": utterance.id,
            "audio_seconds": round(stats.audio_seconds, 3),
            "synthesis_ms": round((time.monotonic() - stats.started_at) * 1000, 1),
            "first_audio_ms": round((first_audio - utterance.received_at) * 1000, 1),
            "cached_sentences": stats.units.cached_units,
        })

    async def send_json(self, body: dict) -> None:
        async with self._send_lock:
            await self.ws.send_json(body)

    async def send_bytes(self, data: bytes) -> None:
        async with self._send_lock:
            await self.ws.send_bytes(data)

    async def error(self, code: str, message: str, utterance_id: str | None = None, **extra: Any) -> None:
        body: dict[str, Any] = {"type": "error", "code": code, "message": message, **extra}
        if utterance_id:
            body["id"] = utterance_id
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError):
                await self.send_json(body)


def _timings(message: dict) -> bool:
    timings = message.get("timings", False)
    if not isinstance(timings, bool):
        raise RequestError("invalid_option", "timings must be true or false")
    return timings


async def websocket_tts(request: web.Request) -> web.WebSocketResponse:
    return await run_session(request, WsSession)


async def run_session(request: web.Request, session_type: type[WsSession]) -> web.WebSocketResponse:
    """Serves one WebSocket with `session_type` (WsSession, or a subclass speaking another protocol on the same
    queue, admission and limits) until it closes."""
    config = request.app[CONFIG]
    limit = config.server.max_ws_message_bytes
    ws = web.WebSocketResponse(max_msg_size=limit * HARD_LIMIT_FACTOR, heartbeat=30)
    await ws.prepare(request)
    session = session_type(ws, request.app[ENGINE], config.audio.default_format,
                           EncoderSettings(opus_bitrate=config.audio.opus_bitrate),
                           config.server.max_text_chars, limit, config.server.ws_max_queued,
                           config.server.ws_idle_timeout_s)
    try:
        await session.run()
    except ConnectionError:
        log.info("websocket client went away")
    except Exception:
        log.exception("websocket session failed; closing it")
        await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"internal error")
    return ws
