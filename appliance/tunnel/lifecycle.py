"""The tunnel supervisor's place in the daemon's lifecycle: `app.cleanup_ctx.append(tunnel_context)`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from ..app_keys import CONFIG, ENGINE
from ..health import TunnelHealth, TunnelState
from ..security.device_key import DeviceKeyError, ensure_device_key
from .backoff import Backoff
from .ssh_command import TunnelTarget, tunnel_config_problem
from .supervisor import TunnelSupervisor

log = logging.getLogger(__name__)


async def tunnel_context(app: web.Application) -> AsyncIterator[None]:
    """Run the tunnel supervisor while the application runs, when tunnel.enabled; otherwise just say
    'disabled' on the engine's HealthBoard. A misconfigured tunnel is reported, not fatal: the LAN keeps working."""
    config = app[CONFIG]
    board = app[ENGINE].health_board
    if not config.tunnel.enabled:
        board.report_tunnel(TunnelHealth(TunnelState.DISABLED))
        yield
        return
    problem = tunnel_config_problem(config.tunnel)
    if problem is None:
        try:
            key = await asyncio.to_thread(ensure_device_key, config.service.state_folder)
        except (DeviceKeyError, OSError) as e:
            problem = f"the device key can't be created: {e}"
    if problem is not None:
        log.error("tunnel refused: %s", problem)
        board.report_tunnel(TunnelHealth(TunnelState.REFUSED, reason="config", last_error=problem))
        yield
        return
    supervisor = TunnelSupervisor(
        target=TunnelTarget.from_config(config.tunnel, key.private_key),
        report=board.report_tunnel,
        backoff=Backoff(max_s=config.tunnel.max_backoff_s),
        refused_retry_s=config.tunnel.max_backoff_s,
    )
    task = supervisor.start()
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
