"""Where the daemon's outer components report their typed health, and who is told when it changes.

The engine owns one board (`SpeechEngine.health_board`) and composes the whole snapshot with its own parts
(voices, streams) in `SpeechEngine.health()`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

from . import __version__
from .health import (
    CacheHealth,
    HealthPart,
    HealthSnapshot,
    LoopLag,
    MdnsHealth,
    PrerenderHealth,
    StreamsHealth,
    TunnelHealth,
    VoiceHealth,
    WatchdogHealth,
    WyomingHealth,
)

Listener = Callable[[HealthPart], None]


class LoopLagSource(Protocol):
    def summary(self) -> LoopLag: ...


class WyomingSource(Protocol):
    def health(self) -> WyomingHealth: ...


class PrerenderSource(Protocol):
    def health(self) -> PrerenderHealth: ...


class HealthBoard:
    """The latest report of each outer component (tunnel, mDNS, watchdog), a reader for the event-loop lag,
    and the listeners to tell about changes (the systemd status line).

    Threading: event-loop thread only. Every writer reports from a coroutine or callback on the loop, and the
    listeners are called there, synchronously, so they must only schedule work. Each part has one writer: the
    tunnel's lifecycle and supervisor, the mDNS announcer, the systemd watchdog pinger, the engine (streams).
    The event-loop probe, the Wyoming listener and the pre-renderer are read when a snapshot is taken.
    """

    def __init__(self) -> None:
        self._tunnel: TunnelHealth | None = None
        self._mdns: MdnsHealth | None = None
        self._watchdog: WatchdogHealth | None = None
        self._wyoming: WyomingSource | None = None
        self._prerender: PrerenderSource | None = None
        self._loop_lag: LoopLagSource | None = None
        self._listeners: list[Listener] = []

    def report_tunnel(self, tunnel: TunnelHealth) -> None:
        if tunnel != self._tunnel:
            self._tunnel = tunnel
            self.changed(HealthPart.TUNNEL)

    def report_mdns(self, mdns: MdnsHealth) -> None:
        if mdns != self._mdns:
            self._mdns = mdns
            self.changed(HealthPart.MDNS)

    def report_watchdog(self, watchdog: WatchdogHealth | None) -> None:
        """None: nothing pings systemd's watchdog (the unit asks for no pings, or the daemon stopped)."""
        if watchdog != self._watchdog:
            self._watchdog = watchdog
            self.changed(HealthPart.WATCHDOG)

    def watch_wyoming(self, source: WyomingSource | None) -> None:
        """The Wyoming listener, read at snapshot time (it starts before the engine exists); None when it stops."""
        self._wyoming = source

    def watch_prerender(self, source: PrerenderSource | None) -> None:
        """The pre-renderer's queue, read at snapshot time; None when it stops."""
        self._prerender = source

    def measure_loop_lag(self, source: LoopLagSource | None) -> None:
        """The probe that reads the event loop's lag at snapshot time; None when it stops."""
        self._loop_lag = source

    def changed(self, part: HealthPart) -> None:
        """Tell the listeners; for parts the board does not hold (the engine's streams)."""
        for listener in list(self._listeners):
            listener(part)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` after every change; returns the function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def snapshot(self, default_voice: str, voices: tuple[VoiceHealth, ...], streams: StreamsHealth,
                 cache: CacheHealth | None = None) -> HealthSnapshot:
        """The whole snapshot, around the engine's own parts (the phrase cache's with the pre-renderer's report)."""
        if cache is not None and self._prerender is not None:
            cache = dataclasses.replace(cache, prerender=self._prerender.health())
        return HealthSnapshot(
            version=__version__,
            default_voice=default_voice,
            voices=voices,
            streams=streams,
            tunnel=self._tunnel,
            mdns=self._mdns,
            watchdog=self._watchdog,
            event_loop=self._loop_lag.summary() if self._loop_lag is not None else None,
            wyoming=self._wyoming.health() if self._wyoming is not None else None,
            cache=cache,
        )

    @property
    def tunnel(self) -> TunnelHealth | None:
        return self._tunnel

    @property
    def mdns(self) -> MdnsHealth | None:
        return self._mdns

    @property
    def watchdog(self) -> WatchdogHealth | None:
        return self._watchdog
