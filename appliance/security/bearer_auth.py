"""The bearer-token check in front of every route of a listener (HTTP and WebSocket upgrades alike).

The token is compared in constant time and never logged: nothing here puts the header, the expected token
or the offered one into a log record, an exception or a response.
"""

from __future__ import annotations

import hmac
import logging
from typing import Final

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

log = logging.getLogger(__name__)

SCHEME: Final = "bearer"


def bearer_auth_middleware(token: str) -> Middleware:
    """Refuse every request lacking `Authorization: Bearer <token>` with 401 and a JSON error body."""
    if not token or token != token.strip():
        raise ValueError("the bearer token must be a non-empty string without surrounding whitespace")
    expected = token.encode("ascii")

    @web.middleware
    async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        offered = _offered_token(request.headers.get(hdrs.AUTHORIZATION))
        if offered is None:
            return _unauthorized("this listener needs an `Authorization: Bearer <token>` header", None)
        # Encoding with "replace" turns odd characters into "?", which no token_urlsafe token contains.
        if not hmac.compare_digest(offered.encode("utf-8", "replace"), expected):
            log.debug("refused a request with a wrong token from %s for %s", request.remote, request.path)
            return _unauthorized("the bearer token is not valid", "invalid_token")
        return await handler(request)

    return bearer_auth


def _offered_token(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != SCHEME or not value.strip():
        return None
    return value.strip()


def _unauthorized(message: str, error: str | None) -> web.Response:
    challenge = "Bearer" if error is None else f'Bearer error="{error}"'
    # `type` and `param` as well: the body is then also in OpenAI's error shape, which the /v1 routes answer in.
    return web.json_response(
        {"error": {"code": "unauthorized", "message": message, "type": "invalid_request_error", "param": None}},
        status=401,
        headers={hdrs.WWW_AUTHENTICATE: challenge},
    )
