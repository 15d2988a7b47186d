"""Shared fixtures: one real engine with the default voice for the whole run, and a real daemon on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from appliance.config import ApplianceConfig, apply_overrides, config_from_dict
from appliance.daemon import create_app
from appliance.synthesis.engine import SpeechEngine
from appliance.synthesis.loading import load_engine
from appliance.transports.listener import Listener, ListenerLimits


def make_config(state_folder: Path, **overrides: object) -> ApplianceConfig:
    # The phrase cache is off for the shared engine: tests of synthesis must synthesise (tests/test_phrase_cache.py
    # turns it on).
    config = config_from_dict({"mdns": {"enabled": False}, "wyoming": {"enabled": False},
                               "cache": {"enabled": False}, "service": {"state_folder": str(state_folder)}})
    return apply_overrides(config, overrides)


@pytest.fixture(scope="session")
def state_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="session")
def engine(state_folder: Path) -> Iterator[SpeechEngine]:
    """The default voice on the CPU decoder, loaded and warmed once."""
    engine = load_engine(make_config(state_folder))
    yield engine
    engine.close()


async def start_app(app: web.Application, max_connections: int = 256, idle_timeout_s: float = 10.0
                    ) -> tuple[Listener, str]:
    """Serves `app` on an ephemeral loopback port the way the daemon serves its LAN listener."""
    listener = Listener(app, "127.0.0.1", 0, ListenerLimits(max_connections, idle_timeout_s, shutdown_timeout_s=2.0))
    await listener.start()
    return listener, listener.url


@pytest.fixture
async def server(engine: SpeechEngine, state_folder: Path) -> AsyncIterator[str]:
    """A real daemon on an ephemeral loopback port, sharing the session's engine; yields its base URL."""
    listener, url = await start_app(create_app(make_config(state_folder), engine=engine))
    yield url
    await listener.stop()
