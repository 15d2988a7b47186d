"""WebSocket `GET /ws/tts`: JSON control messages in, binary audio frames out (never base64).

Client -> server
  {"type": "speak", "text": "...", "id"?, voice?, speaker?, length_scale?, noise_scale?, noise_w?, format?, seed?}
  {"type": "text", "text": "..."}  (text streamed from a language model; the first one may carry options)
  {"type": "flush"}                (end of the streamed text: speak what remains)
  {"type": "cancel"}               (barge-in: stop the audio now and drop what is queued)
Server -> client
  {"type": "start", "id", "format", "content_type", "sample_rate", "voice"} then binary frames, then
  {"type": "end", "id", "audio_seconds", "synthesis_ms", "first_audio_ms"}
  {"type": "cancelled", "ids": [...]}
  {"type": "error", "code", "message", "id"?}
Utterances play in the order they were asked for, one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from ..app_keys import CONFIG, ENGINE
from ..audio.formats import AudioFormat, EncoderSettings, make_encoder
from ..synthesis.engine import PreparedRequest, SpeechEngine
from ..synthesis.request import RequestError, SynthesisRequest, checked_text
from ..text.sentences import SentenceBuffer
from .options import parse_options, parse_request

log = logging.getLogger(__name__)

HARD_LIMIT_FACTOR = 4
"""aiohttp closes the socket (1009) beyond this multiple of the message limit; below it we answer with an
error message and keep the connection."""


def add_websocket_routes(app: web.Application) -> None:
    app.router.add_get("/ws/tts", websocket_tts)


@dataclass
class Utterance:
    id: str
    prepared: PreparedRequest
    audio_format: AudioFormat
    received_at: float
    more_text: asyncio.Queue[str | None] | None = None
    """Streamed text: complete sentences, then None after the flush."""
    streamed_chars: int = 0

    async def text_pieces(self) -> AsyncIterator[str]:
        assert self.more_text is not None
        while (piece := await self.more_text.get()) is not None:
            yield piece


@dataclass
class WsSession:
    ws: web.WebSocketResponse
    engine: SpeechEngine
    default_format: str
    encoder_settings: EncoderSettings
    max_text_chars: int
    max_message_bytes: int
    queue: asyncio.Queue[Utterance] = field(default_factory=asyncio.Queue)
    current: Utterance | None = None
    open_text: Utterance | None = None
    buffer: SentenceBuffer = field(default_factory=SentenceBuffer)
    _send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _player: asyncio.Task[None] | None = None

    async def run(self) -> None:
        self._player = asyncio.create_task(self._play())
        try:
            async for message in self.ws:
                if message.type == WSMsgType.TEXT:
                    await self._on_text(message.data)
                elif message.type == WSMsgType.BINARY:
                    await self.error("unexpected_binary", "send JSON text messages, not binary ones")
                elif message.type == WSMsgType.ERROR:
                    log.info("websocket closed with error: %s", self.ws.exception())
        finally:
            self._player.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._player

    # -- incoming -------------------------------------------------------------------------------------

    async def _on_text(self, data: str) -> None:
        if len(data.encode()) > self.max_message_bytes:
            await self.error("message_too_large", f"messages are limited to {self.max_message_bytes} bytes")
            return
        try:
            message: Any = json.loads(data)
        except json.JSONDecodeError:
            await self.error("malformed_json", "messages must be JSON objects")
            return
        if not isinstance(message, dict):
            await self.error("malformed_json", "messages must be JSON objects")
            return
        kind = message.get("type")
        try:
            if kind == "speak":
                await self._speak(message)
            elif kind == "text":
                await self._text(message)
            elif kind == "flush":
                self._flush()
            elif kind == "cancel":
                await self._cancel()
            else:
                raise RequestError("unknown_type", "type must be speak, text, flush or cancel")
        except RequestError as e:
            await self.error(e.code, e.message, message.get("id") if isinstance(message.get("id"), str) else None)

    async def _speak(self, message: dict) -> None:
        request, audio_format = parse_request(message, self.default_format)
        prepared = self.engine.prepare(request)
        self.queue.put_nowait(Utterance(self._new_id(message), prepared, audio_format, time.monotonic()))

    async def _text(self, message: dict) -> None:
        text = message.get("text")
        if not isinstance(text, str):
            raise RequestError("invalid_text", "text must be a string")
        text = checked_text(text)
        if self.open_text is None:
            options, audio_format = parse_options(message, self.default_format)
            prepared = self.engine.prepare(SynthesisRequest(text="", **options), text_follows=True)
            self.open_text = Utterance(self._new_id(message), prepared, audio_format, time.monotonic(),
                                       more_text=asyncio.Queue())
            self.queue.put_nowait(self.open_text)
        utterance = self.open_text
        utterance.streamed_chars += len(text)
        if utterance.streamed_chars > self.max_text_chars:
            await self._cancel()
            raise RequestError("text_too_long", f"streamed text exceeds {self.max_text_chars} characters")
        complete = self.buffer.add(text)
        if complete:
            utterance.more_text.put_nowait(complete)

    def _flush(self) -> None:
        if self.open_text is None:
            return
        rest = self.buffer.flush()
        if rest.strip():
            self.open_text.more_text.put_nowait(rest)
        self.open_text.more_text.put_nowait(None)
        self.open_text = None

    async def _cancel(self) -> None:
        """Barge-in: stop the audio being sent now, drop what is queued, then acknowledge."""
        ids = [self.current.id] if self.current else []
        while not self.queue.empty():
            ids.append(self.queue.get_nowait().id)
        self.open_text = None
        self.buffer.flush()
        if self._player is not None:
            self._player.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._player
        self.current = None
        self._player = asyncio.create_task(self._play())
        await self.send_json({"type": "cancelled", "ids": ids})

    def _new_id(self, message: dict) -> str:
        given = message.get("id")
        return given if isinstance(given, str) and given else f"u{next(self._ids)}"

    # -- outgoing -------------------------------------------------------------------------------------

    async def _play(self) -> None:
        while True:
            utterance = await self.queue.get()
            self.current = utterance
            try:
                await self._play_one(utterance)
            except RequestError as e:
                await self.error(e.code, e.message, utterance.id)
            except (ConnectionError, RuntimeError) as e:
                if self.ws.closed:
                    return
                log.exception("utterance %s failed", utterance.id)
                await self.error("synthesis_failed", str(e), utterance.id)
            finally:
                self.current = None

    async def _play_one(self, utterance: Utterance) -> None:
        prepared = utterance.prepared
        sample_rate = prepared.voice.config.sample_rate
        encoder = make_encoder(utterance.audio_format, sample_rate, self.encoder_settings)
        more = utterance.text_pieces() if utterance.more_text is not None else None
        audio = self.engine.stream(prepared, more)
        await self.send_json({"type": "start", "id": utterance.id, "format": utterance.audio_format.value,
                              "content_type": encoder.content_type, "sample_rate": sample_rate,
                              "voice": prepared.voice.name})
        started = time.monotonic()
        first_audio: float | None = None
        samples = 0
        try:
            async for chunk in audio:
                samples += len(chunk.samples)
                data = encoder.encode(chunk.samples)
                if data:
                    first_audio = first_audio or time.monotonic()
                    await self.send_bytes(data)
            tail = encoder.finish()
            if tail:
                await self.send_bytes(tail)
        finally:
            await audio.aclose()
            encoder.close()
        await self.send_json({
            "type": "end",
            "id": utterance.id,
            "audio_seconds": round(samples / sample_rate, 3),
            "synthesis_ms": round((time.monotonic() - started) * 1000, 1),
            "first_audio_ms": round(((first_audio or time.monotonic()) - utterance.received_at) * 1000, 1),
        })

    async def send_json(self, body: dict) -> None:
        async with self._send_lock:
            await self.ws.send_json(body)

    async def send_bytes(self, data: bytes) -> None:
        async with self._send_lock:
            await self.ws.send_bytes(data)

    async def error(self, code: str, message: str, utterance_id: str | None = None) -> None:
        body: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if utterance_id:
            body["id"] = utterance_id
        if not self.ws.closed:
            await self.send_json(body)


async def websocket_tts(request: web.Request) -> web.WebSocketResponse:
    config = request.app[CONFIG]
    limit = config.server.max_ws_message_bytes
    ws = web.WebSocketResponse(max_msg_size=limit * HARD_LIMIT_FACTOR, heartbeat=30)
    await ws.prepare(request)
    session = WsSession(ws, request.app[ENGINE], config.audio.default_format,
                        EncoderSettings(opus_bitrate=config.audio.opus_bitrate),
                        config.server.max_text_chars, limit)
    await session.run()
    return ws
