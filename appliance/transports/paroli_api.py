"""Paroli-compatible routes, so clients written for Paroli (github.com/marty1885/paroli, a Piper server for the
RK3588) work unchanged against the appliance:

  POST /api/v1/synthesise   JSON {text, speaker_id?, speaker?, length_scale?, noise_scale?, noise_w?,
                            audio_format?: "opus" (default) | "pcm"} → `audio/ogg; codecs=opus`, or `audio/raw`
                            (s16le mono at the voice's rate); refusals are 400 `text/plain` with the reason
  GET  /api/v1/speakers     {name: id, ...} of the voice; {} for a single-speaker voice
  GET  /api/v1/stream       WebSocket: the same JSON as a text message → binary audio blobs, then
                            {"status": "ok", "message": "finished"}; a refusal or failure is
                            {"status": "failed", "message": ...} and the connection carries on

Paroli serves one voice: these routes speak the appliance's default voice (`voices.default`). Audio, admission,
limits and the bearer token are those of our own routes (`/api/tts`, `/ws/tts`); only the request's JSON and the
shape of replies and refusals are Paroli's. Where Paroli's behaviour differs from ours (it buffers the whole
file, silently answers PCM for an unknown `audio_format`, has no busy answer), the README's "Paroli-compatible
routes" section says which one these routes follow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from ..app_keys import CONFIG, ENGINE
from ..audio.formats import AudioFormat
from ..synthesis.admission import Busy
from ..synthesis.engine import PreparedRequest, SpeechEngine
from ..synthesis.output import play
from ..synthesis.request import RequestError, SynthesisRequest
from ..voices.voice_config import VoiceConfig
from .errors import REQUEST_ID
from .http_api import stream_audio
from .json_body import read_json_object
from .options import parse_options, shortened
from .websocket_tts import Utterance, WsSession, run_session

log = logging.getLogger(__name__)

PAROLI_KEYS: Final = ("text", "speaker_id", "speaker", "length_scale", "noise_scale", "noise_w", "audio_format")
"""The request keys Paroli reads; it ignores any other, and so do these routes (logged, not refused)."""
SCALE_KEYS: Final = ("length_scale", "noise_scale", "noise_w")
PAROLI_FORMATS: Final[Mapping[str, AudioFormat]] = {"opus": AudioFormat.OPUS, "pcm": AudioFormat.PCM}
DEFAULT_FORMAT: Final = "opus"
PCM_CONTENT_TYPE: Final = "audio/raw"
"""Paroli's media type for headerless s16le; the rate is the voice's (also in our `X-Sample-Rate` header)."""
FINISHED: Final = {"status": "ok", "message": "finished"}


def add_paroli_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/synthesise", synthesise)
    app.router.add_get("/api/v1/speakers", speakers)
    app.router.add_get("/api/v1/stream", stream)


@dataclasses.dataclass(frozen=True)
class ParoliRequest:
    synthesis: SynthesisRequest
    audio_format: AudioFormat
    ignored_keys: tuple[str, ...]
    """Keys Paroli would ignore too: reported in the log, so a misspelt option does not pass unnoticed there."""


def parse_paroli_request(raw: Mapping[str, Any], voice: VoiceConfig) -> ParoliRequest:
    """Paroli's request JSON, for `voice` (which resolves speaker names); RequestError names what is wrong.
    Absent or null options take the voice's defaults, as in Paroli; a speaker name wins over `speaker_id`."""
    if "text" not in raw:
        raise RequestError("invalid_text", "Missing 'text' field")
    text = raw["text"]
    if not isinstance(text, str):
        raise RequestError("invalid_text", "'text' must be a string")
    speaker: int | None = None
    if raw.get("speaker_id") is not None:
        speaker = _whole_number("speaker_id", raw["speaker_id"])
    if raw.get("speaker") is not None:
        speaker = _speaker_by_name(raw["speaker"], voice)
    options, _ = parse_options({key: raw[key] for key in SCALE_KEYS if key in raw}, DEFAULT_FORMAT)
    fmt = raw.get("audio_format")
    fmt = DEFAULT_FORMAT if fmt is None else fmt
    if not isinstance(fmt, str) or fmt not in PAROLI_FORMATS:
        raise RequestError("invalid_option", 'audio_format must be "opus" or "pcm"')
    ignored = tuple(key for key in raw if key not in PAROLI_KEYS)
    return ParoliRequest(SynthesisRequest(text=text, speaker=speaker, **options), PAROLI_FORMATS[fmt], ignored)


def _whole_number(key: str, value: Any) -> int:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError("invalid_option", f"{key} must be a whole number")
    return value


def _speaker_by_name(name: Any, voice: VoiceConfig) -> int:
    """By name only, as Paroli does: "3" is a name here, not an id."""
    if not isinstance(name, str):
        raise RequestError("invalid_option", "speaker must be a speaker's name (or use speaker_id)")
    if not voice.speaker_id_map:
        raise RequestError("unknown_speaker", "Speaker ID map is not available: this voice has a single speaker")
    if name not in voice.speaker_id_map:
        raise RequestError("unknown_speaker", f"Unknown speaker name {shortened(name)!r}; see /api/v1/speakers")
    return voice.speaker_id_map[name]


def prepare_paroli(engine: SpeechEngine, raw: Mapping[str, Any], request_id: str, transport: str) -> PreparedRequest:
    """Checks a Paroli request completely against the default voice; nothing is synthesised yet."""
    parsed = parse_paroli_request(raw, engine.voices[engine.default_voice].config)
    if parsed.ignored_keys:
        log.info("request %s: ignored keys Paroli does not know either: %s", request_id,
                 ", ".join(repr(key[:40]) for key in parsed.ignored_keys[:8]))
    return engine.prepare(parsed.synthesis, parsed.audio_format, transport=transport)


# -- HTTP ----------------------------------------------------------------------------------------------------


async def synthesise(request: web.Request) -> web.StreamResponse:
    """Checks the whole request, waits for a synthesis stream, then streams the audio as it is made (Paroli
    sends the whole file at the end; a client reading the body to its end sees no difference)."""
    config, engine = request.app[CONFIG], request.app[ENGINE]
    try:
        raw = await read_json_object(request, config.server.body_timeout_s)
        prepared = prepare_paroli(engine, raw, request[REQUEST_ID], "paroli")
    except RequestError as e:
        return refusal(400, e.code, e.message)
    try:
        pcm = prepared.facts.audio_format is AudioFormat.PCM
        return await stream_audio(request, prepared, media_type=PCM_CONTENT_TYPE if pcm else None)
    except Busy as e:
        response = refusal(503, "busy", str(e))
        response.headers["Retry-After"] = str(e.retry_after_s)
        return response


def refusal(status: int, code: str, message: str) -> web.Response:
    """Paroli's shape: the reason as plain text. Our error code rides along in a header, for logs and tools."""
    return web.Response(status=status, text=message, content_type="text/plain", headers={"X-Error-Code": code})


async def speakers(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    speaker_ids = engine.voices[engine.default_voice].config.speaker_id_map or {}
    return web.json_response(dict(sorted(speaker_ids.items())))  # Paroli's map is sorted by name


# -- WebSocket -----------------------------------------------------------------------------------------------


async def stream(request: web.Request) -> web.WebSocketResponse:
    return await run_session(request, ParoliSession)


@dataclasses.dataclass
class ParoliSession(WsSession):
    """Our WebSocket session (message size limit, idle timeout, one utterance at a time in order, admission per
    utterance, a bounded queue) speaking Paroli's messages. Paroli runs the messages of one socket concurrently,
    so their audio can interleave; here each message's audio and its `finished` come before the next's."""

    async def _on_message(self, message: dict[str, Any]) -> None:
        try:
            prepared = prepare_paroli(self.engine, message, "websocket", "paroli_websocket")
            self._enqueue(Utterance(self._new_id({}), prepared, time.monotonic()))
        except RequestError as e:
            await self.error(e.code, e.message)

    async def _play_one(self, utterance: Utterance, asked_at: float) -> None:
        await play(self.engine, utterance.prepared, self.send_bytes, self.encoder_settings, asked_at=asked_at)
        await self.send_json(FINISHED)

    async def error(self, code: str, message: str, utterance_id: str | None = None, **extra: Any) -> None:
        """`{"status": "failed", "message": ...}`; extra facts (a busy answer's `retry_after`) ride along."""
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError):
                await self.send_json({"status": "failed", "message": message, **extra})
