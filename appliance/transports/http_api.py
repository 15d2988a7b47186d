"""HTTP: `POST /api/tts` (and `GET /api/tts?text=…`, for links and <audio> elements) streams audio as it is made;
`POST /api/timings` says when each word of that audio is said, without making it; `GET /api/voices`,
`GET /healthz`, and the web page at `/`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

from aiohttp import web

from ..app_keys import CONFIG, ENGINE
from ..audio.formats import EncoderSettings, content_type
from ..synthesis.engine import PreparedRequest
from ..synthesis.output import StreamFailed, play
from .errors import REQUEST_ID
from .health_json import health_json
from .json_body import read_json_object
from .options import REQUEST_KEYS, parse_request, refuse_unknown_keys
from .routes import ApiRoutes

log = logging.getLogger(__name__)


def add_http_routes(app: web.Application, routes: ApiRoutes) -> None:
    app.router.add_post(routes.tts, speak)
    app.router.add_get(routes.tts, speak)
    app.router.add_post(routes.timings, timings)
    app.router.add_get(routes.voices, voices)
    app.router.add_get(routes.health, health)
    app.router.add_get(routes.page, page)


async def speak(request: web.Request) -> web.StreamResponse:
    """Checks the whole request, waits for a synthesis slot, and only then sends headers and streams."""
    return await stream_audio(request, await _prepared(request))


async def timings(request: web.Request) -> web.Response:
    """The words of the text and when the audio of the same request (and seed) says them; only the prelude
    runs. The seed is in the answer, so the client can ask /api/tts for exactly that audio."""
    prepared = await _prepared(request)
    engine = request.app[ENGINE]
    async with engine.slot(prepared):
        found = await engine.timings(prepared)
    facts = prepared.facts
    return web.json_response({
        "voice": facts.voice, "seed": prepared.seed, "sample_rate": facts.sample_rate,
        "duration": round(found.duration, 5), "words": [word.as_json() for word in found.words],
    }, headers={"Cache-Control": "no-store"})


async def _prepared(request: web.Request) -> PreparedRequest:
    """The request a JSON body (POST) or query string (GET) asks for, checked whole (RequestError if not)."""
    config = request.app[CONFIG]
    raw: Mapping[str, Any]
    if request.method == "POST":
        raw = await read_json_object(request, config.server.body_timeout_s)
    else:
        raw = request.query
    refuse_unknown_keys(raw, REQUEST_KEYS)
    synthesis_request, audio_format = parse_request(raw, config.audio.default_format,
                                                    strings=request.method == "GET")
    return request.app[ENGINE].prepare(synthesis_request, audio_format, transport="http")


async def stream_audio(
    request: web.Request,
    prepared: PreparedRequest,
    settings: EncoderSettings | None = None,
    *,
    media_type: str | None = None,
    frame: Callable[[bytes], bytes] | None = None,
    trailer: bytes = b"",
) -> web.StreamResponse:
    """Waits for an admission slot (Busy, before any header, when none frees up), then streams: every HTTP
    route that speaks ends here. `media_type`, `frame` and `trailer` let a route wrap the audio (OpenAI's
    server-sent events). Once the headers are out, a failure can only be told by cutting the stream: the
    connection is closed without the final chunk, so every HTTP client reports an incomplete body (a second
    response inside the body would corrupt it)."""
    engine = request.app[ENGINE]
    async with engine.slot(prepared) as asked_at:
        return await _admitted(request, prepared, settings, media_type, frame, trailer, asked_at)


async def _admitted(request: web.Request, prepared: PreparedRequest, settings: EncoderSettings | None,
                    media_type: str | None, frame: Callable[[bytes], bytes] | None, trailer: bytes,
                    asked_at: float) -> web.StreamResponse:
    engine, config = request.app[ENGINE], request.app[CONFIG]
    settings = settings or EncoderSettings(opus_bitrate=config.audio.opus_bitrate)
    request_id = request[REQUEST_ID]
    facts = prepared.facts
    rate = settings.stream_rate(facts.sample_rate)
    response = web.StreamResponse(headers={
        "Content-Type": media_type or content_type(facts.audio_format, rate),
        "Cache-Control": "no-store",
        "X-Request-Id": request_id,
        "X-Voice": facts.voice,
        "X-Sample-Rate": str(rate),
        "X-Decoder-Backend": facts.backend,
    })
    if facts.cache is not None:
        response.headers["X-Cache"] = facts.cache
    response.enable_chunked_encoding()
    await response.prepare(request)
    send_timeout = config.server.send_timeout_s

    async def write(data: bytes) -> None:  # raises once the client has gone: the stream then stops
        await asyncio.wait_for(response.write(data), send_timeout)

    async def send(data: bytes) -> None:
        await write(frame(data) if frame else data)

    try:
        await play(engine, prepared, send, settings, asked_at=asked_at)
        if trailer:
            await write(trailer)
        await response.write_eof()
    except ConnectionError:
        log.info("request %s: the client went away during %s; synthesis stopped", request_id, request.path)
    except TimeoutError:
        log.info("request %s: the client took no audio for %g s; cut off", request_id, send_timeout)
        _cut(request, flush=False)
    except StreamFailed as e:
        log.warning("request %s: synthesis failed after the headers were sent; stream cut: %s", request_id, e)
        _cut(request, flush=True)
    return response


def _cut(request: web.Request, *, flush: bool) -> None:
    """Ends the connection without the chunked terminator. `flush`: the audio already written goes first."""
    transport = request.transport
    if transport is None:
        return
    if flush:
        transport.close()
    else:
        transport.abort()


async def voices(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    return web.json_response({"default": engine.default_voice, "voices": engine.describe_voices()})


async def health(request: web.Request) -> web.Response:
    return web.json_response(health_json(request.app[ENGINE].health()))


async def page(request: web.Request) -> web.Response:
    html = resources.files("appliance.transports").joinpath("web/index.html").read_text(encoding="utf-8")
    return web.Response(text=html, content_type="text/html")
