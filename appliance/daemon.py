"""The daemon's whole lifecycle in one place: the application, its routes, and its background services
started in order (engine first, READY=1 to systemd last) and stopped in reverse."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from .app_keys import CONFIG, ENGINE, STATUS
from .config import ApplianceConfig
from .discovery.context import mdns_context
from .security.lan import lan_middlewares
from .service.context import systemd_context
from .status import StatusBoard
from .synthesis.engine import SpeechEngine
from .synthesis.loading import load_engine
from .transports.errors import json_errors
from .transports.http_api import add_http_routes
from .transports.websocket_tts import add_websocket_routes
from .tunnel.lifecycle import tunnel_context
from .tunnel.remote_listener import remote_listener_context

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024


def add_routes(app: web.Application) -> None:
    """The API, served the same on the LAN listener and on the tunnel's (token-only) listener."""
    add_http_routes(app)
    add_websocket_routes(app)


def create_app(config: ApplianceConfig, engine: SpeechEngine | None = None,
               status: StatusBoard | None = None) -> web.Application:
    """`engine`: an engine loaded already (tests share one); by default the app loads its own at start-up."""
    app = web.Application(middlewares=[*lan_middlewares(config), json_errors], client_max_size=MAX_BODY_BYTES)
    app[CONFIG] = config
    app[STATUS] = status or (engine.status if engine else StatusBoard())
    if engine is not None:
        app[ENGINE] = engine
    app.cleanup_ctx.extend([
        engine_context,
        remote_listener_context(add_routes, [json_errors]),
        tunnel_context,
        mdns_context,
        systemd_context,  # last: READY=1 once everything above is up
    ])
    add_routes(app)
    return app


async def engine_context(app: web.Application) -> AsyncIterator[None]:
    if ENGINE in app:
        yield  # given by the caller, who also closes it
        return
    engine = await asyncio.to_thread(load_engine, app[CONFIG], app[STATUS])
    app[ENGINE] = engine
    try:
        yield
    finally:
        await asyncio.to_thread(engine.close)


def serve(config: ApplianceConfig) -> None:
    log.info("starting on http://%s:%d", config.server.host, config.server.port)
    web.run_app(create_app(config), host=config.server.host, port=config.server.port, print=None,
                shutdown_timeout=5.0)
