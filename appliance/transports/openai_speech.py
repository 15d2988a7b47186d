"""OpenAI-compatible speech API: `POST /v1/audio/speech`, `GET /v1/models`, `GET /v1/audio/voices`.

An app written for OpenAI's text-to-speech switches by changing `base_url` (to `http://appliance:8848/v1`, or the
tunnel's address) and `api_key` (the tunnel's bearer token; the LAN listener takes any key unless
`server.lan_token_required`). Requests are checked the way OpenAI checks them (unknown parameters refused by name)
and refusals come in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, so OpenAI's clients raise
their usual errors (`BadRequestError`, `RateLimitError`, ...).

- `model`: tts-1, tts-1-hd, gpt-4o-mini-tts (and its dated names) all mean "our voices"; the name of one of our
  voices picks that voice, and `voice` then picks among its speakers.
- `voice`: OpenAI's names are mapped by the `[openai] voices` table (default: the default voice); our own voice
  names and `voice:speaker` work too.
- `speed`: OpenAI's 1.0 is the voice's own pace; `length_scale` is the voice's default divided by `speed`.
- `instructions`: accepted and ignored (Piper voices take no style prompt).
- `response_format`: mp3 (default), opus, aac, flac, wav at the voice's rate; pcm is 24 kHz s16le mono, as OpenAI
  defines it, resampled from the voice's rate.
- `stream_format`: `audio` (the bytes as they are encoded, chunked) or `sse` (`speech.audio.delta` events with
  base64 audio, then `speech.audio.done`).

Every route goes through the same engine, admission control and output pipeline as `/api/tts`.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from ..app_keys import CONFIG, ENGINE
from ..audio.formats import AudioFormat, EncoderSettings
from ..config import ApplianceConfig
from ..synthesis.admission import Busy
from ..synthesis.engine import PreparedRequest, SpeechEngine
from ..synthesis.request import LENGTH_RANGE, RequestError, SynthesisRequest
from .errors import HTTP_STATUS
from .http_api import stream_audio
from .json_body import read_json_object
from .options import shortened

log = logging.getLogger(__name__)

MODELS: Final = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15", "gpt-4o-mini-tts-2025-03-20")
"""OpenAI's speech model names; each means "our voices" (a voice's own name, given as model, picks that voice)."""
OPENAI_VOICES: Final = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer",
                        "verse", "marin", "cedar")
"""OpenAI's built-in voice names; each speaks with our default voice unless `[openai] voices` maps it."""
PARAMETERS: Final = ("model", "input", "voice", "instructions", "response_format", "speed", "stream_format")
SPEED_RANGE: Final = (0.25, 4.0)
PCM_RATE: Final = 24_000
"""OpenAI's `pcm`: 24 kHz signed 16-bit little-endian mono, whatever the voice's rate."""
DEFAULT_FORMAT: Final = AudioFormat.MP3
STREAM_FORMATS: Final = ("audio", "sse")
OWNER: Final = "appliance"

_PARAM_OF_CODE: Final[Mapping[str, str]] = {
    "empty_text": "input", "text_too_long": "input", "invalid_text": "input",
    "unknown_voice": "voice", "unknown_speaker": "voice", "out_of_range": "speed",
}
"""The request field an engine refusal is about, for OpenAI's `param`."""
_TRANSPORT_CODES: Final = frozenset({"body_too_large", "body_timeout", "unsupported_media_type",
                                     "unsupported_charset", "unsupported_content_encoding"})
"""Refusals of the HTTP request itself keep our statuses (413, 408, 415); every refusal of a field is a 400, as
OpenAI answers (a text over the limit too, where `/api/tts` says 413)."""


class OpenAIError(Exception):
    """A refusal in OpenAI's shape."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind

    @classmethod
    def from_request_error(cls, error: RequestError) -> OpenAIError:
        status = HTTP_STATUS.get(error.code, 400) if error.code in _TRANSPORT_CODES else 400
        return cls(status, error.message, param=_PARAM_OF_CODE.get(error.code), code=error.code)

    def response(self) -> web.Response:
        return openai_error_response(self.status, self.message, kind=self.kind, param=self.param, code=self.code)


def openai_error_response(status: int, message: str, *, kind: str = "invalid_request_error",
                          param: str | None = None, code: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status)


def add_openai_routes(app: web.Application) -> None:
    app.router.add_post("/v1/audio/speech", speech)
    app.router.add_get("/v1/audio/voices", voices)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/models/{model}", model)


# -- the request --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeechRequest:
    """A checked `POST /v1/audio/speech`: what to synthesise, and how to send it."""

    synthesis: SynthesisRequest
    audio_format: AudioFormat
    sse: bool

    @property
    def output_rate(self) -> int | None:
        """The rate the stream is resampled to (OpenAI's 24 kHz pcm); None: the voice's own."""
        return PCM_RATE if self.audio_format is AudioFormat.PCM else None


def voice_table(config: ApplianceConfig) -> dict[str, str]:
    """Every name a client may send as `voice` besides our own → `voice` or `voice:speaker`."""
    return {**dict.fromkeys(OPENAI_VOICES, config.voices.default), **config.openai.voices}


def parse_speech_request(raw: Mapping[str, Any], engine: SpeechEngine, table: Mapping[str, str]) -> SpeechRequest:
    """The one reading of a speech request's JSON; OpenAIError names the parameter that is wrong."""
    for key in raw:
        if key not in PARAMETERS:
            raise OpenAIError(400, f"Unrecognized request argument supplied: {shortened(key)}", param=shortened(key),
                              code="unknown_parameter")
    for key in ("model", "input", "voice"):
        if raw.get(key) is None:
            raise OpenAIError(400, f"Missing required parameter: '{key}'.", param=key,
                              code="missing_required_parameter")
    model = _string(raw, "model")
    if model not in MODELS and model not in engine.voices:
        raise OpenAIError(400, f"The model '{shortened(model)}' does not exist; use one of {', '.join(MODELS)} "
                          "or a voice's name (see /v1/models)", param="model", code="model_not_found")
    text = _string(raw, "input")
    voice_value = raw["voice"]
    if isinstance(voice_value, Mapping) and set(voice_value) == {"id"}:  # the client's custom-voice form
        voice_value = voice_value["id"]
    if not isinstance(voice_value, str):
        raise OpenAIError(400, "voice must be a string (or {\"id\": \"...\"})", param="voice", code="invalid_type")
    voice, speaker = resolve_voice(model, voice_value, table, engine)
    if raw.get("instructions") is not None:
        _string(raw, "instructions")  # accepted, and ignored: Piper voices take no style prompt
    audio_format = _choice(raw, "response_format", [f.value for f in AudioFormat], DEFAULT_FORMAT.value)
    stream_format = _choice(raw, "stream_format", STREAM_FORMATS, "audio")
    length_scale = _length_scale(raw.get("speed"), engine.voices[voice].config.length_scale)
    synthesis = SynthesisRequest(text=text, voice=voice, speaker=speaker, length_scale=length_scale)
    return SpeechRequest(synthesis, AudioFormat(audio_format), stream_format == "sse")


def resolve_voice(model: str, voice: str, table: Mapping[str, str], engine: SpeechEngine) -> tuple[str, str | None]:
    """(our voice, speaker or None) for a request's `voice`, given its `model`:

    - one of our voices, `name` or `name:speaker`, is that voice, whatever the model;
    - a name in the table (OpenAI's names) is what the table maps it to; but when `model` names one of our
      voices, that voice speaks, with the mapped speaker if the table maps into it, else its default speaker;
    - with `model` naming one of our voices, anything else is one of its speakers (by name or id).
    """
    name, _, speaker = voice.partition(":")
    if name in engine.voices:
        return name, speaker or None
    model_voice = model if model in engine.voices else None
    target = table.get(voice)
    if target is not None:
        mapped, _, mapped_speaker = target.partition(":")
        if model_voice is not None and model_voice != mapped:
            return model_voice, None
        if mapped not in engine.voices:
            raise OpenAIError(400, f"voice '{voice}' is mapped to '{mapped}' ([openai] voices in the appliance's "
                              "configuration), which is not installed", param="voice", code="unknown_voice")
        return mapped, mapped_speaker or None
    if model_voice is not None:
        return model_voice, voice
    raise OpenAIError(400, f"unknown voice '{shortened(voice)}'; see /v1/audio/voices", param="voice",
                      code="unknown_voice")


def _length_scale(speed: Any, default: float) -> float | None:
    """OpenAI's speed 1.0 is the voice's own pace: the voice's length_scale divided by `speed`, kept within the
    engine's range (a voice whose default is far from 1 reaches it before speed does)."""
    if speed is None:
        return None
    if isinstance(speed, bool) or not isinstance(speed, int | float):
        raise OpenAIError(400, "speed must be a number", param="speed", code="invalid_type")
    low, high = SPEED_RANGE
    if not low <= speed <= high:  # NaN and infinities too (JSON as Python reads it has them), and huge integers
        raise OpenAIError(400, f"speed must be between {low} and {high}, got {speed}", param="speed",
                          code="invalid_value")
    if speed == 1:
        return None
    low_scale, high_scale = LENGTH_RANGE
    return min(high_scale, max(low_scale, default / speed))


def _string(raw: Mapping[str, Any], key: str) -> str:
    value = raw[key]
    if not isinstance(value, str):
        raise OpenAIError(400, f"{key} must be a string", param=key, code="invalid_type")
    return value


def _choice(raw: Mapping[str, Any], key: str, allowed: Any, default: str) -> str:
    value = raw.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or value not in allowed:
        raise OpenAIError(400, f"{key} must be one of {', '.join(allowed)}", param=key, code="invalid_value")
    return value


# -- routes -------------------------------------------------------------------------------------------


async def speech(request: web.Request) -> web.StreamResponse:
    """Checks the whole request, waits for a synthesis slot (429 with Retry-After when none frees up), and
    only then sends headers and streams."""
    config, engine = request.app[CONFIG], request.app[ENGINE]
    try:
        raw = await read_json_object(request, config.server.body_timeout_s)
        asked = parse_speech_request(raw, engine, voice_table(config))
        prepared = engine.prepare(asked.synthesis, asked.audio_format, transport="openai")
    except RequestError as e:
        return OpenAIError.from_request_error(e).response()
    except OpenAIError as e:
        return e.response()
    settings = EncoderSettings(opus_bitrate=config.audio.opus_bitrate, output_rate=asked.output_rate)
    try:
        return await _stream(request, prepared, settings, sse=asked.sse)
    except Busy as e:
        response = openai_error_response(429, str(e), kind="requests", code="rate_limit_exceeded")
        response.headers["Retry-After"] = str(e.retry_after_s)
        return response


def _stream(request: web.Request, prepared: PreparedRequest, settings: EncoderSettings, *,
            sse: bool) -> Awaitable[web.StreamResponse]:
    """Admits and streams one request as `/api/tts` does; a failure after the headers cuts the connection (an SSE
    stream then lacks its `speech.audio.done`), so no client takes it for whole."""
    if not sse:
        return stream_audio(request, prepared, settings)
    # OpenAI reports tokens; nothing here is counted in tokens, so the usage is zero.
    done = sse_event({"type": "speech.audio.done", "usage": {"input_tokens": 0, "output_tokens": 0,
                                                             "total_tokens": 0}})
    return stream_audio(request, prepared, settings, media_type="text/event-stream", frame=_audio_delta,
                        trailer=done)


def _audio_delta(data: bytes) -> bytes:
    return sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")})


def sse_event(event: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(event, separators=(",", ":")).encode("utf-8") + b"\n\n"


async def voices(request: web.Request) -> web.Response:
    """`{"voices": [{"id", "name"}]}`, the shape Open WebUI reads: OpenAI's names (and the others the table
    maps), then our voices and, for voices with several, each `voice:speaker`."""
    engine = request.app[ENGINE]
    listed = [{"id": name, "name": f"{name} ({target})"} for name, target in voice_table(request.app[CONFIG]).items()]
    for described in engine.describe_voices():
        listed.append({"id": described["name"], "name": described["name"]})
        listed.extend({"id": f"{described['name']}:{speaker}", "name": f"{described['name']}: {speaker}"}
                      for speaker in described["speakers"])
    return web.json_response({"voices": listed})


async def models(request: web.Request) -> web.Response:
    """OpenAI's list shape: the speech model names, then each of our voices (a voice's name works as a model)."""
    names = [*MODELS, *request.app[ENGINE].voices]
    return web.json_response({"object": "list", "data": [_model(name) for name in names]})


async def model(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    if name not in MODELS and name not in request.app[ENGINE].voices:
        return openai_error_response(404, f"The model '{shortened(name)}' does not exist", param="model",
                                     code="model_not_found")
    return web.json_response(_model(name))


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": OWNER}
