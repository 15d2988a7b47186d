"""The loopback-only listener the tunnel forwards to: a second aiohttp Application with the same routes as
the LAN one, every request behind the bearer token, sharing the LAN application's config and engine.

    app.cleanup_ctx.append(engine_context)                        # ENGINE must be set before...
    app.cleanup_ctx.append(remote_listener_context(setup_routes))  # ...the remote app copies it
    app.cleanup_ctx.append(tunnel_context)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..app_keys import CONFIG, ENGINE
from ..security.bearer_auth import bearer_auth_middleware
from ..security.token import ensure_token
from ..transports.listener import MAX_BODY_BYTES, Listener, ListenerLimits

log = logging.getLogger(__name__)

RouteSetup = Callable[[web.Application], None]
CleanupContext = Callable[[web.Application], AsyncIterator[None]]

LISTENER_HOST: Final = "127.0.0.1"
SHARED_KEYS: Final[tuple[web.AppKey[Any], ...]] = (CONFIG, ENGINE)


def build_remote_app(
    parent: web.Application,
    route_setup: RouteSetup,
    token: str,
    middlewares: Sequence[Middleware] = (),
) -> web.Application:
    """A new Application: the bearer check first, then `middlewares`, then the routes `route_setup` adds.
    `route_setup` must register per-app hooks (on_shutdown for open WebSockets, ...) on the app it is given."""
    remote = web.Application(middlewares=[bearer_auth_middleware(token), *middlewares],
                             client_max_size=MAX_BODY_BYTES)
    for key in SHARED_KEYS:
        if key in parent:
            remote[key] = parent[key]
    route_setup(remote)
    return remote


def remote_listener_context(route_setup: RouteSetup, middlewares: Sequence[Middleware] = ()) -> CleanupContext:
    """A cleanup context running the remote listener on tunnel.listener_port when tunnel.enabled, with the
    device token (created on first use) required on every request."""

    async def remote_listener(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        if not config.tunnel.enabled:
            yield
            return
        token = await asyncio.to_thread(ensure_token, config.service.state_folder)
        listener = Listener(build_remote_app(app, route_setup, token, middlewares), LISTENER_HOST,
                            config.tunnel.listener_port,
                            ListenerLimits.of(config.server, config.tunnel.max_connections))
        await listener.start()
        log.info("remote listener on %s (bearer token required)", listener.url)
        try:
            yield
        finally:
            await listener.stop()

    return remote_listener
