"""Every refusal is JSON: `{"error": {"code": ..., "message": ...}}` with a 4xx status."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response(error_body(code, message), status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own refusals (404, 405, 413 ...) and unexpected failures, as JSON too."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400 or e.content_type == "application/json":
            raise
        code = e.reason.lower().replace(" ", "_")
        response = error_response(e.status, code, e.reason)
        for name in ("Allow", "WWW-Authenticate"):
            if name in e.headers:
                response.headers[name] = e.headers[name]
        return response
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return error_response(500, "internal_error", "the appliance failed to answer; see its log")
