"""Sends the status line to systemd on every board change, at most once per `min_interval_s`.

Changes arriving faster (a client count ticking during a burst of requests) are coalesced: the latest
snapshot wins and goes out when the interval has passed, so the last state is always the one shown.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from .notify import SystemdNotifier
from .status_line import format_status


@dataclass
class StatusPublisher:
    notifier: SystemdNotifier
    loop: asyncio.AbstractEventLoop
    min_interval_s: float = 1.0
    _pending: dict[str, Any] | None = field(default=None, init=False)
    _handle: asyncio.TimerHandle | None = field(default=None, init=False)
    _last_sent_at: float | None = field(default=None, init=False)
    _last_text: str | None = field(default=None, init=False)
    _closed: bool = field(default=False, init=False)

    def on_change(self, snapshot: dict[str, Any]) -> None:
        """A StatusBoard listener. Safe to call from any thread: a component may update the board from
        an inference worker, and the timer must be armed on the loop's thread."""
        self._pending = snapshot
        self.loop.call_soon_threadsafe(self._schedule)

    def send_now(self, snapshot: dict[str, Any]) -> None:
        """Send the line at once, e.g. just before READY=1 so `systemctl status` never shows it without."""
        self._pending = snapshot
        self._flush()

    def close(self) -> None:
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self) -> None:
        if self._closed or self._handle is not None or self._pending is None:
            return
        delay = 0.0
        if self._last_sent_at is not None:
            delay = max(0.0, self._last_sent_at + self.min_interval_s - self.loop.time())
        self._handle = self.loop.call_later(delay, self._flush)

    def _flush(self) -> None:
        self._handle = None
        snapshot, self._pending = self._pending, None
        if snapshot is None or self._closed:
            return
        text = format_status(snapshot)
        if text == self._last_text:  # a change the line does not show (e.g. a tunnel's retry count)
            return
        self.notifier.status(text)
        self._last_text = text
        self._last_sent_at = self.loop.time()
