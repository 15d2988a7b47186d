"""Blocking audio work (Opus encoding resamples to 48 kHz: ~0.3 s per paragraph) off the event loop, so one
client's encoding never delays another client's answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def off_loop(fn: Callable[..., T], *args: object) -> T:
    """Runs `fn(*args)` on a thread. If the caller is cancelled meanwhile (barge-in, shutdown), this waits for
    the call to end before the cancellation goes on, so the caller's cleanup (closing a native encoder) never
    runs while the call is still using it."""
    call = asyncio.get_running_loop().run_in_executor(None, fn, *args)
    try:
        return await asyncio.shield(call)
    except asyncio.CancelledError:
        await asyncio.wait({call})
        raise
