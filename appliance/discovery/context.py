"""The aiohttp lifecycle hook that runs the mDNS announcer alongside the server."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from ..app_keys import CONFIG, STATUS
from .announcer import STATUS_COMPONENT, MdnsAnnouncer
from .settings import MdnsSettings


async def mdns_context(app: web.Application) -> AsyncIterator[None]:
    """For `app.cleanup_ctx`: announce while the app runs, goodbyes at shutdown; nothing if mdns is off.

    Registration runs in the background, so startup does not wait for the ~1 s of probing."""
    config, status = app[CONFIG], app[STATUS]
    if not config.mdns.enabled:
        status.update(STATUS_COMPONENT, state="disabled")
        yield
        return
    announcer = MdnsAnnouncer(MdnsSettings.from_config(config), status)
    await announcer.start()
    try:
        yield
    finally:
        await announcer.close()
