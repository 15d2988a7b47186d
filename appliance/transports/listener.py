"""Serving an Application on one TCP address with the limits every listener shares (LAN and tunnel alike).

aiohttp gives no connection cap and answers its own parser errors in plain text that may echo a request
line or a header (an `Authorization: Bearer …` among them). A listener here:
- binds its socket first (`bind()`), so a busy port is reported before the voices load, and clients that
  connect while they load wait in the backlog instead of being refused;
- caps open connections: one over the cap is answered `503` (JSON, `Retry-After`) and closed at once, so a
  flood on one listener never takes the file descriptors another needs;
- closes a connection that has not sent complete headers, or sits idle between requests, after
  `idle_timeout_s` (aiohttp's keep-alive timer covers both: it runs from the connection's start);
- answers malformed requests with our JSON error body, and logs neither the offending line nor any header;
- logs each request's route, never its query string or an unknown path (a token sent as `?token=` or
  pasted into a URL never reaches the log).

Threading: everything here runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from aiohttp.web_request import BaseRequest

from ..config import ServerConfig
from .errors import error_body

log = logging.getLogger(__name__)
access_log = logging.getLogger("appliance.access")

MAX_BODY_BYTES: Final = 256 * 1024
"""Largest request body, on every listener (a request is text of at most `server.max_text_chars`)."""
BACKLOG: Final = 128
ACCEPT_ERROR_LOG_INTERVAL_S: Final = 10.0
BUSY_RETRY_AFTER_S: Final = 1


@dataclass(frozen=True)
class ListenerLimits:
    max_connections: int
    """Open connections (HTTP and WebSocket) beyond which new ones are refused with 503."""
    idle_timeout_s: float
    """Deadline for a connection's complete request headers, and for idling between requests."""
    max_header_bytes: int = 8190
    """Longest request line or header field."""
    shutdown_timeout_s: float = 5.0

    @classmethod
    def of(cls, server: ServerConfig, max_connections: int) -> ListenerLimits:
        """The limits every listener shares, with its own connection cap."""
        return cls(max_connections=max_connections, idle_timeout_s=server.idle_timeout_s)


class RouteAccessLogger(AbstractAccessLogger):
    """One line per request: client, method, the route it matched (never the query string, nor a path we
    have no route for: a client can put anything there, a token included), status, bytes, seconds."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        path = "(no route)"
        try:  # match_info is unset on a request the parser refused (aiohttp asserts)
            resource = request.match_info.route.resource  # type: ignore[attr-defined]
            if resource is not None:
                path = resource.canonical
        except (AssertionError, AttributeError):
            pass
        self.logger.info('%s "%s %s" %s %s %.3fs', request.remote, request.method[:16], path,
                         response.status, response.body_length, time)


class GuardedRequestHandler(web.RequestHandler):
    """aiohttp's per-connection protocol, answering its own refusals as JSON and telling the gate it closed."""

    def __init__(self, manager: web.Server, *, on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._on_close: Callable[[], None] | None = on_close

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """A broken request body met while aiohttp drains it after our answer is the client's fault: not an
        ERROR with a traceback (which could quote the client's bytes)."""
        exc = kwargs.get("exc_info")
        if isinstance(exc, RequestPayloadError | HttpProcessingError | ConnectionError):
            log.debug("dropped a connection with a broken request: %s", type(exc).__name__)
            return
        super().log_exception(*args, **kwargs)

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # Headers (and maybe audio) went out already: the only honest signal left is a broken stream.
            raise ConnectionError("response already started; closing the connection")
        if status >= 500:
            log.error("unexpected error serving %s", request.path, exc_info=exc)
        else:
            # The parser's message can quote the request line or a header (a token): log only its kind.
            log.debug("refused a malformed request from %s: %s", request.remote, type(exc).__name__)
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Error"
        code = "malformed_request" if status == 400 else reason.lower().replace(" ", "_")
        response = web.json_response(error_body(code, _refusal_message(status, reason)), status=status)
        response.force_close()
        return response


def _refusal_message(status: int, reason: str) -> str:
    if status == 400:
        return "the request is not valid HTTP/1.1 (request line, headers or chunked body)"
    return reason


class _RefusedConnection(asyncio.Protocol):
    """A connection over the cap: told 503 straight away and closed, before anything is read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BUSY_RESPONSE)
        transport.close()


def _busy_response() -> bytes:
    body = json.dumps(error_body("too_many_connections", "this listener has too many open connections; retry"))
    return (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: {BUSY_RETRY_AFTER_S}\r\nConnection: close\r\n\r\n{body}"
    ).encode()


_BUSY_RESPONSE: Final = _busy_response()


@dataclass
class LogThrottle:
    """At most one log line per interval for a repeating condition; counts the lines it held back."""

    interval_s: float = ACCEPT_ERROR_LOG_INTERVAL_S
    held_back: int = 0
    _last: float = field(default=float("-inf"), init=False)

    def allows(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.interval_s:
            self.held_back += 1
            return False
        self._last = now
        return True


@dataclass
class ConnectionGate:
    """The protocol factory of one listener: counts open connections and refuses those over the cap."""

    manager: web.Server
    limits: ListenerLimits
    open: int = 0
    refused: int = 0
    _warnings: LogThrottle = field(default_factory=LogThrottle, repr=False)

    def __call__(self) -> asyncio.Protocol:
        if self.open >= self.limits.max_connections:
            self.refused += 1
            if self._warnings.allows():
                log.warning("connection cap (%d) reached; refusing new connections (%d so far)",
                            self.limits.max_connections, self.refused)
            return _RefusedConnection()
        self.open += 1
        return GuardedRequestHandler(
            self.manager,
            on_close=self._closed,
            loop=asyncio.get_running_loop(),
            keepalive_timeout=self.limits.idle_timeout_s,
            access_log_class=RouteAccessLogger,
            access_log=access_log,
            max_line_size=self.limits.max_header_bytes,
            max_field_size=self.limits.max_header_bytes,
        )

    def _closed(self) -> None:
        self.open -= 1


class _GatedSite(web.BaseSite):
    """A site serving on a socket bound beforehand, through a ConnectionGate."""

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, gate: ConnectionGate) -> None:
        super().__init__(runner)
        self._sock = sock
        self._gate = gate

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        self._server = await asyncio.get_running_loop().create_server(self._gate, sock=self._sock,
                                                                      backlog=BACKLOG)


class ListenError(OSError):
    """The listener's address cannot be bound; the message names it."""


@dataclass
class Listener:
    """One Application on one address. `bind()` takes the port; `start()` starts the Application (its
    cleanup contexts: loading the voices…) and then serves; `stop()` closes connections and cleans up."""

    app: web.Application
    host: str
    port: int
    limits: ListenerLimits
    _sock: socket.socket | None = field(default=None, init=False, repr=False)
    _runner: web.AppRunner | None = field(default=None, init=False, repr=False)
    gate: ConnectionGate | None = field(default=None, init=False)

    def bind(self) -> None:
        if self._sock is not None:
            return
        try:
            family, kind, proto, _name, address = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
            sock = socket.socket(family, kind, proto)
        except OSError as e:
            raise ListenError(f"cannot listen on {self.host}:{self.port}: {e.strerror or e}") from e
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            why = "the port is in use" if e.errno == 98 else (e.strerror or str(e))
            raise ListenError(f"cannot listen on {self.host}:{self.port}: {why}") from e
        self._sock = sock

    @property
    def bound_port(self) -> int:
        assert self._sock is not None, "bind() first"
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        host = self._sock.getsockname()[0] if self._sock is not None else self.host
        return f"http://{host}:{self.bound_port}"

    async def start(self) -> None:
        self.bind()
        assert self._sock is not None
        runner = web.AppRunner(self.app, handle_signals=False, access_log_class=RouteAccessLogger,
                               access_log=access_log, shutdown_timeout=self.limits.shutdown_timeout_s)
        await runner.setup()
        try:
            assert runner.server is not None
            self.gate = ConnectionGate(runner.server, self.limits)
            await _GatedSite(runner, self._sock, self.gate).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()  # closes the socket with the server
        elif self._sock is not None:
            self._sock.close()
        self._sock = None


@dataclass
class AcceptErrorLog:
    """A loop exception handler logging asyncio's accept() failures (out of file descriptors…) at most once
    per interval instead of a traceback per attempt; every other loop error goes to the default handler."""

    throttle: LogThrottle = field(default_factory=LogThrottle)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "accept" not in str(context.get("message", "")):
            loop.default_exception_handler(context)
            return
        if self.throttle.allows():
            log.warning("accepting connections failed: %s (%s); %d similar errors not logged since the last",
                        context.get("message"), context.get("exception"), self.throttle.held_back)
            self.throttle.held_back = 0
