"""`POST /api/cache/prerender {"texts": [...], "voice"?}`: phrases rendered into the phrase cache in the
background (202 with the count queued; progress in /healthz under `cache.prerender`)."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from ..app_keys import CONFIG, PRERENDER
from ..synthesis.request import RequestError
from .json_body import read_json_object
from .options import refuse_unknown_keys
from .routes import ApiRoutes

MAX_TEXTS: Final = 1_000
"""Phrases in one request (each also within `server.max_text_chars`, the body within the body limit)."""
KEYS: Final = ("texts", "voice")


def add_cache_routes(app: web.Application, routes: ApiRoutes) -> None:
    app.router.add_post(routes.prerender, prerender)


async def prerender(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    raw = await read_json_object(request, config.server.body_timeout_s)
    refuse_unknown_keys(raw, KEYS)
    texts, voice = raw.get("texts"), raw.get("voice")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise RequestError("invalid_texts", "texts must be a non-empty list of strings")
    if len(texts) > MAX_TEXTS:
        raise RequestError("too_many_texts", f"{len(texts)} texts; at most {MAX_TEXTS} per request")
    if voice is not None and not isinstance(voice, str):
        raise RequestError("invalid_option", "voice must be a string")
    prerenderer = request.app.get(PRERENDER)
    if prerenderer is None:
        raise RequestError("cache_disabled", "the phrase cache is off (cache.enabled = false)")
    queued = prerenderer.add(texts, voice)
    return web.json_response({"queued": queued, "prerender": prerenderer.health().__dict__}, status=202)
