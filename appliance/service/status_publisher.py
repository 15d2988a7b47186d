"""Sends the status line to systemd on every health change, at most once per `min_interval_s`.

Changes arriving faster (a client count ticking during a burst of requests) are coalesced: the line is made
from the snapshot read when the interval has passed, so the last state is always the one shown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from ..health import HealthPart, HealthSnapshot
from .notify import SystemdNotifier
from .status_line import format_status


@dataclass
class StatusPublisher:
    """Threading: event-loop thread only, like the HealthBoard whose listener it is."""

    notifier: SystemdNotifier
    loop: asyncio.AbstractEventLoop
    health: Callable[[], HealthSnapshot]
    """Read when a line is due (`SpeechEngine.health`)."""
    min_interval_s: float = 1.0
    _handle: asyncio.TimerHandle | None = field(default=None, init=False)
    _last_sent_at: float | None = field(default=None, init=False)
    _last_text: str | None = field(default=None, init=False)
    _closed: bool = field(default=False, init=False)

    def on_change(self, part: HealthPart) -> None:
        """A HealthBoard listener: arms the timer, unless a line is already due."""
        if self._closed or self._handle is not None:
            return
        delay = 0.0
        if self._last_sent_at is not None:
            delay = max(0.0, self._last_sent_at + self.min_interval_s - self.loop.time())
        self._handle = self.loop.call_later(delay, self._flush)

    def send_now(self) -> None:
        """Send the line at once, e.g. just before READY=1 so `systemctl status` never shows it without."""
        if self._handle is not None:
            self._handle.cancel()
        self._flush()

    def close(self) -> None:
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _flush(self) -> None:
        self._handle = None
        if self._closed:
            return
        text = format_status(self.health())
        if text == self._last_text:  # a change the line does not show (e.g. a tunnel's retry count)
            return
        self.notifier.status(text)
        self._last_text = text
        self._last_sent_at = self.loop.time()
