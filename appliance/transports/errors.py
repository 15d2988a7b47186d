"""Every refusal is JSON: `{"error": {"code": ..., "message": ...}}` with a 4xx status (503 when busy), and
every response carries an `X-Request-Id` that the log lines about it repeat."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from aiohttp import web

from ..synthesis.admission import Busy
from ..synthesis.request import RequestError
from .json_body import ClientGone

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID = web.RequestKey("request_id", str)
_REQUEST_ID_SHAPE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
"""A client's own request id is kept (and logged) only if it is this plain."""


HTTP_STATUS: Final[Mapping[str, int]] = {
    "text_too_long": 413,
    "body_too_large": 413,
    "unknown_voice": 404,
    "unknown_speaker": 404,
    "unsupported_media_type": 415,
    "unsupported_charset": 415,
    "unsupported_content_encoding": 415,
    "body_timeout": 408,
}
"""The HTTP status of each refusal code; every other code is a 400."""


def http_status(error: RequestError) -> int:
    return HTTP_STATUS.get(error.code, 400)


def error_body(code: str, message: str, **extra: object) -> dict:
    return {"error": {"code": code, "message": message, **extra}}


def error_response(status: int, code: str, message: str, **extra: object) -> web.Response:
    return web.json_response(error_body(code, message, **extra), status=status)


def busy_response(busy: Busy) -> web.Response:
    response = error_response(503, "busy", str(busy), retry_after=busy.retry_after_s)
    response.headers["Retry-After"] = str(busy.retry_after_s)
    return response


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refusals raised by handlers (RequestError, Busy) and aiohttp's own (404, 405, 413 ...) as JSON; an
    unexpected failure before the headers as a JSON 500 (a bug: logged with its traceback)."""
    offered = request.headers.get("X-Request-Id", "")
    request_id = offered if _REQUEST_ID_SHAPE.fullmatch(offered) else secrets.token_hex(6)
    request[REQUEST_ID] = request_id
    try:
        response = await handler(request)
    except RequestError as e:
        response = error_response(http_status(e), e.code, e.message)
    except Busy as e:
        response = busy_response(e)
    except ConnectionError as e:  # ClientGone among them: nobody is left to answer
        if request.writer.output_size > 0:
            raise
        log.info("request %s: the client went away (%s %s: %s)", request_id, request.method, request.path,
                 "while sending its request" if isinstance(e, ClientGone) else type(e).__name__)
        response = error_response(400, "client_gone", "the client went away")
    except web.HTTPException as e:
        if e.status < 400 or e.content_type == "application/json":
            raise
        code = e.reason.lower().replace(" ", "_")
        response = error_response(e.status, code, e.reason)
        for name in ("Allow", "WWW-Authenticate"):
            if name in e.headers:
                response.headers[name] = e.headers[name]
    except Exception:
        if request.writer.output_size > 0:
            # A response went out already: a second one would land inside its body. Close the connection.
            log.exception("request %s: failed after its response started; connection closed", request_id)
            raise ConnectionError("response already started") from None
        log.exception("request %s: unexpected error serving %s %s", request_id, request.method, request.path)
        response = error_response(500, "internal_error", "the appliance failed to answer; see its log")
    if not response.prepared:
        response.headers["X-Request-Id"] = request_id
    return response
