"""How the inference workers share the machine: earliest deadline first, so a request that has just arrived
speaks quickly even while long streams are running, and a cancelled job never runs."""

from __future__ import annotations

import asyncio
import threading
import time

from appliance.synthesis.engine import SpeechEngine
from appliance.synthesis.request import SynthesisRequest
from appliance.synthesis.workers import DeadlineWorkers

LONG = " ".join(["This long text keeps a stream busy for a good while, window after window."] * 12)


def test_the_waiting_job_with_the_earliest_deadline_runs_first() -> None:
    workers = DeadlineWorkers(1)
    gate = threading.Event()
    ran: list[str] = []
    try:
        blocker = workers.submit(gate.wait)  # occupies the only worker while the others queue
        now = time.monotonic()
        futures = [workers.submit_by(now + offset, ran.append, name)
                   for name, offset in (("late", 5.0), ("early", -1.0), ("middle", 1.0), ("middle-2", 1.0))]
        gate.set()
        for future in (blocker, *futures):
            future.result(timeout=5)
        assert ran == ["early", "middle", "middle-2", "late"]
    finally:
        workers.shutdown()


def test_a_cancelled_job_never_runs_and_shutdown_cancels_what_waits() -> None:
    workers = DeadlineWorkers(1)
    gate = threading.Event()
    ran: list[str] = []
    blocker = workers.submit(gate.wait)
    cancelled = workers.submit(ran.append, "cancelled")
    assert cancelled.cancel()
    kept = workers.submit(ran.append, "kept")
    gate.set()
    kept.result(timeout=5)
    blocker.result(timeout=5)
    assert ran == ["kept"]
    gate.clear()
    workers.submit(gate.wait)
    dropped = workers.submit(ran.append, "dropped")
    workers.shutdown(wait=False, cancel_futures=True)  # while the worker is still held: `dropped` only waits
    gate.set()
    workers.shutdown(wait=True)
    assert dropped.cancelled() and ran == ["kept"]


async def first_audio_s(engine: SpeechEngine, text: str) -> float:
    started = time.monotonic()
    stream = engine.stream(engine.prepare(SynthesisRequest(text=text, seed=1)))
    try:
        await anext(stream)
        return time.monotonic() - started
    finally:
        await stream.aclose()


async def test_a_new_request_speaks_quickly_while_long_streams_run(engine: SpeechEngine) -> None:
    alone = min([await first_audio_s(engine, "Is anyone there?") for _ in range(3)])
    started = time.monotonic()
    produced = [0.0, 0.0, 0.0]

    async def drain_long(n: int) -> None:
        stream = engine.stream(engine.prepare(SynthesisRequest(text=LONG, seed=2)))
        try:
            async for chunk in stream:
                produced[n] += len(chunk.samples) / chunk.sample_rate
        finally:
            await stream.aclose()

    busy = [asyncio.create_task(drain_long(n)) for n in range(3)]
    try:
        # Wait until the long streams are ahead of their listeners (as they are in steady use): their windows
        # are then due later than a new request's first one.
        while min(produced) < time.monotonic() - started + 2.0:
            assert time.monotonic() - started < 30, "three streams never got ahead of real time"
            await asyncio.sleep(0.05)
        loaded = [await first_audio_s(engine, "Is anyone there?") for _ in range(3)]
    finally:
        for task in busy:
            task.cancel()
        await asyncio.gather(*busy, return_exceptions=True)
    # Behind the long streams' queued windows (first come, first served) this took seconds; by deadline it
    # waits only for the jobs already running on the two workers.
    assert max(loaded) <= 3 * alone + 0.3, (alone, loaded)
