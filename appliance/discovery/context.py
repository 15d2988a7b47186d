"""The aiohttp lifecycle hook that runs the mDNS announcer alongside the server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from ..app_keys import CONFIG, STATUS
from ..transports.routes import ApiRoutes
from .announcer import STATUS_COMPONENT, MdnsAnnouncer
from .settings import MdnsSettings

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def mdns_context(routes: ApiRoutes) -> CleanupContext:
    """For `app.cleanup_ctx`: announce while the app runs, with `routes` (the table the app's router was built
    from) in the TXT record; goodbyes at shutdown; nothing if mdns is off.

    Registration runs in the background, so startup does not wait for the ~1 s of probing."""

    async def mdns(app: web.Application) -> AsyncIterator[None]:
        config, status = app[CONFIG], app[STATUS]
        if not config.mdns.enabled:
            status.update(STATUS_COMPONENT, state="disabled")
            yield
            return
        announcer = MdnsAnnouncer(MdnsSettings.from_config(config, routes), status)
        await announcer.start()
        try:
            yield
        finally:
            await announcer.close()

    return mdns
