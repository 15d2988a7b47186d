"""The daemon's whole lifecycle in one place: the application, its routes, and its background services
started in order (engine first, READY=1 to systemd last) and stopped in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
from collections.abc import AsyncIterator

from aiohttp import web

from .app_keys import CONFIG, ENGINE, PRERENDER
from .audio.formats import preload_encoders
from .config import ApplianceConfig
from .discovery.context import mdns_context
from .security.lan import lan_middlewares
from .service.context import systemd_context
from .service.loop_lag import loop_lag_context
from .synthesis.engine import SpeechEngine
from .synthesis.loading import load_engine
from .synthesis.prerender import Prerenderer, read_phrase_file
from .transports.cache_api import add_cache_routes
from .transports.errors import json_errors
from .transports.http_api import add_http_routes
from .transports.listener import MAX_BODY_BYTES, AcceptErrorLog, Listener, ListenerLimits
from .transports.metrics import add_metrics_routes
from .transports.openai_speech import add_openai_routes
from .transports.paroli_api import add_paroli_routes
from .transports.routes import API_ROUTES
from .transports.websocket_tts import add_websocket_routes
from .transports.wyoming_tts import wyoming_context, wyoming_health_context
from .tunnel.lifecycle import tunnel_context
from .tunnel.remote_listener import remote_listener_context

log = logging.getLogger(__name__)


def add_routes(app: web.Application) -> None:
    """The API, served the same on the LAN listener and on the tunnel's (token-only) listener."""
    add_http_routes(app, API_ROUTES)
    add_websocket_routes(app, API_ROUTES)
    add_metrics_routes(app, API_ROUTES)
    add_cache_routes(app, API_ROUTES)
    add_paroli_routes(app)  # Paroli's own paths, fixed by its clients
    add_openai_routes(app)  # OpenAI's own paths, fixed by its clients


def create_app(config: ApplianceConfig, engine: SpeechEngine | None = None) -> web.Application:
    """`engine`: an engine loaded already (tests share one); by default the app loads its own at start-up.
    The services after the engine report their health on the engine's HealthBoard."""
    app = web.Application(middlewares=[*lan_middlewares(config), json_errors], client_max_size=MAX_BODY_BYTES)
    app[CONFIG] = config
    if engine is not None:
        app[ENGINE] = engine
    app.cleanup_ctx.extend([
        wyoming_context,  # first: bound and answering `describe` while the engine loads
        engine_context,
        wyoming_health_context,
        prerender_context,
        loop_lag_context,
        remote_listener_context(add_routes, [json_errors]),
        tunnel_context,
        mdns_context(API_ROUTES),  # advertises the routes `add_routes` serves
        systemd_context,  # last: READY=1 once everything above is up
    ])
    add_routes(app)
    return app


async def engine_context(app: web.Application) -> AsyncIterator[None]:
    if ENGINE in app:
        yield  # given by the caller, who also closes it
        return
    engine = await asyncio.to_thread(load_engine, app[CONFIG])
    await asyncio.to_thread(preload_encoders)
    app[ENGINE] = engine
    try:
        yield
    finally:
        await asyncio.to_thread(engine.close)


async def prerender_context(app: web.Application) -> AsyncIterator[None]:
    """Renders `cache.prerender`'s phrases, then those posted to /api/cache/prerender, in the background."""
    engine = app[ENGINE]
    if engine.phrase_cache is None:
        yield
        return
    prerenderer = Prerenderer(engine)
    path = app[CONFIG].cache.prerender
    if path is not None:
        prerenderer.add_phrases(await asyncio.to_thread(read_phrase_file, path), str(path))
    app[PRERENDER] = prerenderer
    engine.health_board.watch_prerender(prerenderer)
    task = asyncio.create_task(prerenderer.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        engine.health_board.watch_prerender(None)


def lan_listener(app: web.Application, config: ApplianceConfig) -> Listener:
    return Listener(app, config.server.host, config.server.port,
                    ListenerLimits.of(config.server, config.server.max_connections))


def serve(config: ApplianceConfig) -> None:
    """Runs until SIGTERM or SIGINT. Raises ListenError (naming the address) if the port cannot be bound;
    the port is bound before the voices load, so that error comes at once."""
    raise_file_limit()
    asyncio.run(_serve(config))


async def _serve(config: ApplianceConfig) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(AcceptErrorLog())
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    listener = lan_listener(create_app(config), config)
    listener.bind()
    log.info("starting on http://%s:%d", config.server.host, config.server.port)
    await listener.start()
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await listener.stop()


def raise_file_limit(wanted: int = 8192) -> None:
    """Up to the hard limit: the connection caps are set well below it, so accept() never runs out."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
