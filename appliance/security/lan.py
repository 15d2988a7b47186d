"""The LAN listener's optional token check (server.lan_token_required, off by default)."""

from __future__ import annotations

from aiohttp.typedefs import Middleware

from ..config import ApplianceConfig
from .bearer_auth import bearer_auth_middleware
from .token import ensure_token


def lan_middlewares(config: ApplianceConfig) -> list[Middleware]:
    """Middlewares to put first on the LAN Application: the bearer check when the config asks for it."""
    if not config.server.lan_token_required:
        return []
    return [bearer_auth_middleware(ensure_token(config.service.state_folder))]
