"""The inference workers: a fixed set of threads running model stages, earliest deadline first.

A job's deadline is when its output is needed: for a stream, the moment its listener would run out of audio
if playback had started with the request (`started + audio produced so far`). A new request's first jobs are
due at once; a stream far ahead of real time waits behind them. So admitted requests start speaking quickly
however many streams are running, a long text cannot starve a short one, and every stream stays ahead of its
listener while the total work fits the machine. Ties go first come, first served.

Threading: `submit` may be called from any thread; jobs run on the worker threads.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(order=True)
class _Job:
    deadline: float
    seq: int
    fn: Callable[..., Any] = field(compare=False)
    args: tuple[Any, ...] = field(compare=False)
    future: Future[Any] = field(compare=False)


class DeadlineWorkers(Executor):
    def __init__(self, threads: int, name: str = "inference") -> None:
        self._heap: list[_Job] = []
        self._seq = itertools.count()
        self._ready = threading.Condition()
        self._closed = False
        self._started: dict[int, float] = {}
        """When each busy thread's current job started (monotonic seconds), by thread number."""
        self._threads = [threading.Thread(target=self._work, args=(n,), name=f"{name}-{n}", daemon=True)
                         for n in range(threads)]
        for thread in self._threads:
            thread.start()

    def submit_by(self, deadline: float, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        """Runs `fn(*args)` on a worker; of the waiting jobs, the one with the earliest `deadline` (a
        `time.monotonic()` value) runs first."""
        future: Future[T] = Future()
        with self._ready:
            if self._closed:
                raise RuntimeError("the inference workers are shut down")
            heapq.heappush(self._heap, _Job(deadline, next(self._seq), fn, args, future))
            self._ready.notify()
        return future

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """The Executor interface (`loop.run_in_executor`): due now."""
        if kwargs:
            return self.submit_by(time.monotonic(), lambda: fn(*args, **kwargs))
        return self.submit_by(time.monotonic(), fn, *args)

    @property
    def waiting(self) -> int:
        with self._ready:
            return len(self._heap)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._ready:
            self._closed = True
            if cancel_futures:
                for job in self._heap:
                    job.future.cancel()
                self._heap.clear()
            self._ready.notify_all()
        if wait:
            for thread in self._threads:
                thread.join()

    def longest_job_s(self) -> float:
        """How long the job that has run longest so far has been running (0 when every thread is idle)."""
        now = time.monotonic()
        with self._ready:
            return max((now - started for started in self._started.values()), default=0.0)

    async def responsive(self, timeout_s: float, stuck_after_s: float) -> bool:
        """True when a no-op job runs within `timeout_s`, or when every thread is busy with a job that started
        less than `stuck_after_s` ago: workers held by long windows (a slow or emulated CPU) are busy, not
        wedged. False once a job has run longer than that, or the pool is shut down."""
        if await probe_executor(self, timeout_s):
            return True
        with self._ready:
            if self._closed:
                return False
        return self.longest_job_s() < stuck_after_s

    def _work(self, number: int) -> None:
        while True:
            with self._ready:
                while not self._heap and not self._closed:
                    self._ready.wait()
                if not self._heap:
                    return  # closed and drained
                job = heapq.heappop(self._heap)
            if not job.future.set_running_or_notify_cancel():
                continue  # cancelled while waiting (its stream was closed)
            with self._ready:
                self._started[number] = time.monotonic()
            try:
                result = job.fn(*job.args)
            except BaseException as e:
                job.future.set_exception(e)
            else:
                job.future.set_result(result)
            finally:
                with self._ready:
                    del self._started[number]


async def probe_executor(executor: Executor, timeout_s: float) -> bool:
    """A `probe_workers` for an engine whose workers are a thread pool: one no-op job must get through.

    On timeout the job is cancelled, so probes do not pile up in the queue behind a wedged worker. A pool
    answers while any of its threads is free; it fails once all of them are stuck."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            await loop.run_in_executor(executor, _nothing)
    except TimeoutError:
        return False
    except RuntimeError:  # the pool was shut down
        return False
    return True


def _nothing() -> None:
    pass
