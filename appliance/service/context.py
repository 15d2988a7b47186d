"""The systemd side of the daemon's lifecycle, as one aiohttp cleanup context.

The daemon lists `systemd_context` in `app.cleanup_ctx` after the engine's context, so when it starts the
voices are loaded and warmed and READY=1 is true. On shutdown (it is cleaned up before the engine) it
sends STOPPING=1 first, so systemd shows "deactivating" while the engine drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from ..app_keys import CONFIG, ENGINE
from .notify import SystemdNotifier
from .status_publisher import StatusPublisher
from .watchdog import WatchdogPinger

log = logging.getLogger(__name__)


async def systemd_context(app: web.Application) -> AsyncIterator[None]:
    config, engine = app[CONFIG], app[ENGINE]
    board = engine.health_board
    notifier = SystemdNotifier.from_environment()
    publisher = StatusPublisher(notifier, asyncio.get_running_loop(), engine.health)
    unsubscribe = board.subscribe(publisher.on_change)
    publisher.send_now()

    pinger_task: asyncio.Task[None] | None = None
    period = notifier.ping_period()
    if period is not None:
        if not config.service.watchdog:
            # The unit asks for pings but the config opts out of health checks: keep systemd satisfied on
            # event-loop liveness alone rather than be killed every WatchdogSec.
            log.warning("service.watchdog is off: pinging systemd's watchdog without probing the workers")
        pinger = WatchdogPinger(notifier, period, engine if config.service.watchdog else None,
                                on_health=board.report_watchdog)
        pinger_task = asyncio.create_task(pinger.run(), name="systemd-watchdog")

    notifier.ready()
    try:
        yield
    finally:
        notifier.stopping()
        unsubscribe()
        publisher.close()
        if pinger_task is not None:
            pinger_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger_task
            board.report_watchdog(None)
        notifier.close()
