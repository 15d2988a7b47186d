"""Reading a client's JSON (an HTTP body or a WebSocket message) into a dict, refusing with a RequestError
whatever is not a small, plain JSON object: wrong media type, charset or content coding, a body that is slow,
broken or too deeply nested, numbers Python cannot hold."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from ..synthesis.request import RequestError

MAX_JSON_DEPTH: Final = 32
"""Our requests are flat objects; deeper nesting is refused before parsing (the parser recurses)."""
UTF8_NAMES: Final = frozenset({"utf-8", "utf8"})
DECODED_CODINGS: Final = frozenset({"", "identity", "gzip", "deflate"})
"""Content codings aiohttp decodes for us; anything else is refused rather than parsed as raw bytes."""

_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET: Final = re.compile(rb"[\[\]{}]")


class ClientGone(ConnectionError):
    """The client closed the connection while its request was being read."""


async def read_json_object(request: web.Request, timeout_s: float) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise RequestError("unsupported_media_type", "send JSON with Content-Type: application/json")
    charset = (request.charset or "utf-8").lower()
    if charset not in UTF8_NAMES:
        raise RequestError("unsupported_charset", f"JSON must be UTF-8, not {charset[:40]!r}")
    coding = request.headers.get("Content-Encoding", "").strip().lower()
    if coding not in DECODED_CODINGS:
        raise RequestError("unsupported_content_encoding", "send the body plain, gzip or deflate")
    try:
        body = await asyncio.wait_for(request.read(), timeout_s)
    except TimeoutError:
        raise RequestError("body_timeout", f"the request body did not arrive within {timeout_s:g} s") from None
    except web.HTTPRequestEntityTooLarge:
        limit = request.client_max_size
        raise RequestError("body_too_large", f"the request body is larger than {limit} bytes") from None
    except (HttpProcessingError, RequestPayloadError):
        raise RequestError("malformed_body", "the request body could not be decoded (Content-Encoding?)") from None
    except ConnectionError as e:
        raise ClientGone("the client went away while sending its request") from e
    return parse_json_object(body)


def parse_json_object(data: bytes | str) -> dict[str, Any]:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise RequestError("malformed_json", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value: Any = json.loads(data)
    except UnicodeDecodeError:
        raise RequestError("malformed_json", "the request body is not UTF-8") from None
    except (ValueError, RecursionError):  # JSONDecodeError, or an integer with more than 4,300 digits
        raise RequestError("malformed_json", "the request is not valid JSON") from None
    if not isinstance(value, dict):
        raise RequestError("malformed_json", "the request must be a JSON object")
    return value


def json_depth(raw: bytes) -> int:
    """Deepest bracket nesting outside strings (an over-estimate for invalid JSON, which is refused anyway)."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub(b"", raw)):
        if match.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest
