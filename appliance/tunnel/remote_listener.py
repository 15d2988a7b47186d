"""The loopback-only listener the tunnel forwards to: a second aiohttp Application with the same routes as
the LAN one, every request behind the bearer token, sharing the LAN application's config, status board and
engine.

    app.cleanup_ctx.append(engine_context)                        # ENGINE must be set before...
    app.cleanup_ctx.append(remote_listener_context(setup_routes))  # ...the remote app copies it
    app.cleanup_ctx.append(tunnel_context)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..app_keys import CONFIG, ENGINE, STATUS
from ..security.bearer_auth import bearer_auth_middleware
from ..security.token import ensure_token

log = logging.getLogger(__name__)

RouteSetup = Callable[[web.Application], None]
CleanupContext = Callable[[web.Application], AsyncIterator[None]]

LISTENER_HOST: Final = "127.0.0.1"
SHARED_KEYS: Final[tuple[web.AppKey[Any], ...]] = (CONFIG, STATUS, ENGINE)
SHUTDOWN_TIMEOUT_S: Final = 5.0
# aiohttp's default access log format, spelled out so nobody adds %{Authorization}i to it by accident.
ACCESS_LOG_FORMAT: Final = '%a %t "%r" %s %b "%{Referer}i" "%{User-Agent}i"'


def build_remote_app(
    parent: web.Application,
    route_setup: RouteSetup,
    token: str,
    middlewares: Sequence[Middleware] = (),
) -> web.Application:
    """A new Application: the bearer check first, then `middlewares`, then the routes `route_setup` adds.
    `route_setup` must register per-app hooks (on_shutdown for open WebSockets, ...) on the app it is given."""
    remote = web.Application(middlewares=[bearer_auth_middleware(token), *middlewares])
    for key in SHARED_KEYS:
        if key in parent:
            remote[key] = parent[key]
    route_setup(remote)
    return remote


@dataclass
class RemoteListener:
    """Serves `app` on 127.0.0.1:`port` only."""

    app: web.Application
    port: int
    shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S
    _runner: web.AppRunner | None = field(default=None, init=False)

    async def start(self) -> None:
        runner = web.AppRunner(
            self.app,
            handle_signals=False,
            access_log_format=ACCESS_LOG_FORMAT,
            shutdown_timeout=self.shutdown_timeout_s,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, LISTENER_HOST, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("remote listener on %s:%d (bearer token required)", LISTENER_HOST, self.port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


def remote_listener_context(route_setup: RouteSetup, middlewares: Sequence[Middleware] = ()) -> CleanupContext:
    """A cleanup context running the remote listener on tunnel.listener_port when tunnel.enabled, with the
    device token (created on first use) required on every request."""

    async def remote_listener(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        if not config.tunnel.enabled:
            yield
            return
        token = await asyncio.to_thread(ensure_token, config.service.state_folder)
        listener = RemoteListener(build_remote_app(app, route_setup, token, middlewares), config.tunnel.listener_port)
        await listener.start()
        try:
            yield
        finally:
            await listener.stop()

    return remote_listener
