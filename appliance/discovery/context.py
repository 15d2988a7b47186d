"""The aiohttp lifecycle hook that runs the mDNS announcer alongside the server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from ..app_keys import CONFIG, ENGINE, WYOMING_PORT
from ..health import MdnsHealth, MdnsState
from ..transports.routes import ApiRoutes
from .announcer import MdnsAnnouncer
from .settings import MdnsSettings

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def mdns_context(routes: ApiRoutes) -> CleanupContext:
    """For `app.cleanup_ctx`, after the engine's and the Wyoming listener's: announce while the app runs, with
    `routes` (the table the app's router was built from) in the TXT record, and `_wyoming._tcp` on the port the
    Wyoming listener bound; goodbyes at shutdown; nothing if mdns is off.

    Registration runs in the background, so startup does not wait for the ~1 s of probing."""

    async def mdns(app: web.Application) -> AsyncIterator[None]:
        config, engine = app[CONFIG], app[ENGINE]
        board = engine.health_board
        if not config.mdns.enabled:
            board.report_mdns(MdnsHealth(MdnsState.DISABLED))
            yield
            return
        settings = MdnsSettings.from_config(config, routes, wyoming_port=app.get(WYOMING_PORT))
        announcer = MdnsAnnouncer(settings, engine.health, board.report_mdns)
        await announcer.start()
        try:
            yield
        finally:
            await announcer.close()

    return mdns
