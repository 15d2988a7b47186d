"""How late the daemon's event loop runs, as /healthz shows it: a blocked loop is reported, an idle one is not,
and a stall drops out of the figures once it is older than the window."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp

from appliance.service.loop_lag import LoopLagProbe


async def event_loop_health(server: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{server}/healthz") as response:
        return (await response.json())["event_loop"]


async def block_the_loop(seconds: float) -> None:
    """A synchronous call in a callback, as a handler doing blocking work would make."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def block() -> None:
        time.sleep(seconds)
        done.set_result(None)

    loop.call_soon(block)
    await done


async def test_a_blocked_event_loop_shows_in_healthz(server: str) -> None:
    await asyncio.sleep(0.2)  # the probe is under way
    await block_the_loop(0.2)

    lag = await event_loop_health(server)

    assert lag["lag_max_ms"] >= 150
    assert lag["lag_p99_ms"] <= lag["lag_max_ms"]
    assert lag["window_s"] == 60 and lag["samples"] > 0


async def test_an_idle_event_loop_shows_little_lag(server: str) -> None:
    await asyncio.sleep(1.0)

    lag = await event_loop_health(server)

    assert lag["samples"] >= 20  # a tick every 25 ms
    assert lag["lag_p50_ms"] < 10
    assert lag["lag_max_ms"] < 100


async def test_a_stall_older_than_the_window_is_forgotten() -> None:
    probe = LoopLagProbe(window_s=0.5)
    task = asyncio.create_task(probe.run())
    try:
        await asyncio.sleep(0.1)
        await block_the_loop(0.2)
        await asyncio.sleep(0.05)
        assert probe.summary().lag_max_ms >= 150

        await asyncio.sleep(0.6)

        summary = probe.summary()
        assert summary.lag_max_ms < 100
        assert 0 < summary.samples <= 20  # half a second of 25 ms ticks
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
