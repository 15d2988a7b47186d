"""HTTP: `POST /api/tts` (and `GET /api/tts?text=…`, for links and <audio> elements) streams audio as it is made;
`GET /api/voices`, `GET /healthz`, and the web page at `/`."""

from __future__ import annotations

import json
import logging
from importlib import resources
from typing import Any

from aiohttp import web

from .. import __version__
from ..app_keys import CONFIG, ENGINE, STATUS
from ..audio.formats import AudioFormat, EncoderSettings, make_encoder
from ..synthesis.engine import PreparedRequest
from ..synthesis.request import RequestError
from .errors import error_response
from .options import parse_request

log = logging.getLogger(__name__)


def add_http_routes(app: web.Application) -> None:
    app.router.add_post("/api/tts", speak)
    app.router.add_get("/api/tts", speak)
    app.router.add_get("/api/voices", voices)
    app.router.add_get("/healthz", health)
    app.router.add_get("/", page)


async def speak(request: web.Request) -> web.StreamResponse:
    if request.method == "POST":
        if request.content_type != "application/json":
            return error_response(415, "unsupported_media_type", "send JSON with Content-Type: application/json")
        try:
            raw: Any = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error_response(400, "malformed_json", "the request body is not valid JSON")
        if not isinstance(raw, dict):
            return error_response(400, "malformed_json", "the request body must be a JSON object")
    else:
        raw = request.query
    engine = request.app[ENGINE]
    default_format = request.app[CONFIG].audio.default_format
    try:
        synthesis_request, audio_format = parse_request(raw, default_format, strings=request.method == "GET")
        prepared = engine.prepare(synthesis_request)
    except RequestError as e:
        return error_response(e.status, e.code, e.message)
    return await stream_audio(request, prepared, audio_format)


async def stream_audio(
    request: web.Request, prepared: PreparedRequest, audio_format: AudioFormat
) -> web.StreamResponse:
    engine = request.app[ENGINE]
    settings = EncoderSettings(opus_bitrate=request.app[CONFIG].audio.opus_bitrate)
    sample_rate = prepared.voice.config.sample_rate
    encoder = make_encoder(audio_format, sample_rate, settings)
    response = web.StreamResponse(headers={
        "Content-Type": encoder.content_type,
        "Cache-Control": "no-store",
        "X-Voice": prepared.voice.name,
        "X-Sample-Rate": str(sample_rate),
        "X-Decoder-Backend": prepared.voice.decoder.name,
    })
    response.enable_chunked_encoding()
    await response.prepare(request)
    audio = engine.stream(prepared)
    try:
        async for chunk in audio:
            data = encoder.encode(chunk.samples)
            if data:
                await response.write(data)  # raises once the client has gone: the stream then stops
        await response.write(encoder.finish())
        await response.write_eof()
    except ConnectionError:
        log.info("client went away during %s; synthesis stopped", request.path)
    finally:
        await audio.aclose()
        encoder.close()
    return response


async def voices(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    return web.json_response({"default": engine.default_voice, "voices": engine.describe_voices()})


async def health(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    board = request.app[STATUS].snapshot()
    voices_status = board.pop("voices", {})
    for name, voice in engine.voices.items():
        voices_status.setdefault(name, {}).update(voice.describe_backend())
    backends = sorted({v.get("backend", "cpu") for v in voices_status.values()})
    body = {
        "status": "ok",
        "version": __version__,
        "backend": backends[0] if len(backends) == 1 else backends,
        "voices": voices_status,
        "default_voice": engine.default_voice,
        "streams": {"active": engine.counters.active_streams, "completed": engine.counters.completed,
                    "cancelled": engine.counters.cancelled},
        **board,
    }
    return web.json_response(body)


async def page(request: web.Request) -> web.Response:
    html = resources.files("appliance.transports").joinpath("web/index.html").read_text(encoding="utf-8")
    return web.Response(text=html, content_type="text/html")
