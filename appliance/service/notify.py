"""systemd's notify protocol (sd_notify(3)): READY=1, STATUS=, WATCHDOG=1 and STOPPING=1.

libsystemd's sd_notify (through systemd-python) sends the messages when that module is installed. Without
it we send the same datagram ourselves rather than nothing: the unit is `Type=notify`, so a board whose
venv lacks the compiled module would otherwise never report READY=1 and be killed at TimeoutStartSec, and
would never ping the watchdog. The protocol is one datagram to the AF_UNIX socket named by NOTIFY_SOCKET
('@' meaning the abstract namespace), so the fallback is a few lines. Without NOTIFY_SOCKET (not started
by systemd: a developer's shell, the tests, a container) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)


class NotifyTransport(Protocol):
    def send(self, message: str) -> bool:
        """Deliver one notify message; False when it could not be sent (never raises)."""
        ...

    def close(self) -> None: ...


@dataclass
class FailureLog:
    """Warns when sending starts failing and when it works again, not every 15 s in between."""

    via: str
    _failing: bool = False

    def failed(self, message: str, error: OSError) -> None:
        name = message.split("=", 1)[0]
        level = logging.DEBUG if self._failing else logging.WARNING
        log.log(level, "systemd notify %s via %s failed: %s", name, self.via, error)
        self._failing = True

    def succeeded(self) -> None:
        if self._failing:
            log.info("systemd notify via %s works again", self.via)
        self._failing = False


class NullTransport:
    """Not started by systemd: nobody listens."""

    def send(self, message: str) -> bool:
        return False

    def close(self) -> None:
        pass


@dataclass
class LibsystemdTransport:
    """sd_notify from libsystemd; it reads NOTIFY_SOCKET from the process environment itself."""

    notify: Callable[[str], bool]
    _failures: FailureLog = field(default_factory=lambda: FailureLog("libsystemd"), init=False)

    def send(self, message: str) -> bool:
        try:
            sent = bool(self.notify(message))
        except OSError as e:
            self._failures.failed(message, e)
            return False
        self._failures.succeeded()
        return sent

    def close(self) -> None:
        pass


@dataclass
class SocketTransport:
    """Our own sd_notify: one datagram per message to NOTIFY_SOCKET."""

    address: str
    """A filesystem path, or '@name' for the abstract namespace (as systemd writes it)."""
    _sock: socket.socket | None = field(default=None, init=False, repr=False)
    _failures: FailureLog = field(default_factory=lambda: FailureLog("NOTIFY_SOCKET"), init=False)

    def send(self, message: str) -> bool:
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # A full receive queue must not stall the event loop; a lost message is retried next time.
                self._sock.setblocking(False)
            self._sock.sendto(message.encode(), target)
        except OSError as e:
            self._failures.failed(message, e)
            return False
        self._failures.succeeded()
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def libsystemd_notify() -> Callable[[str], bool] | None:
    """systemd-python's sd_notify wrapper, or None where the module is not installed."""
    try:
        from systemd import daemon
    except ImportError:
        return None
    return daemon.notify


@dataclass
class SystemdNotifier:
    """Tells the service manager about the daemon's life: ready, status, alive, stopping."""

    transport: NotifyTransport
    watchdog_usec: int | None = None
    """systemd's WatchdogSec= in microseconds, when it expects pings from this process."""

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, *, use_libsystemd: bool = True
    ) -> SystemdNotifier:
        """Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from this process's environment, or from
        `environ`; then our own sender is used, since libsystemd only reads the process environment."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        watchdog_usec = _watchdog_usec(env)
        if not address:
            return cls(NullTransport(), watchdog_usec)
        notify = libsystemd_notify() if use_libsystemd and environ is None else None
        if notify is not None:
            return cls(LibsystemdTransport(notify), watchdog_usec)
        if not address.startswith(("/", "@")):
            log.warning("NOTIFY_SOCKET=%s needs libsystemd (pip install systemd-python); not notifying", address)
            return cls(NullTransport(), watchdog_usec)
        return cls(SocketTransport(address), watchdog_usec)

    def ready(self) -> bool:
        return self.transport.send("READY=1")

    def status(self, text: str) -> bool:
        # One notify message is newline-separated assignments: a newline would end the STATUS= value.
        return self.transport.send("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> bool:
        return self.transport.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.transport.send("STOPPING=1")

    def watchdog_interval(self) -> float | None:
        """WatchdogSec= in seconds, or None when systemd expects no pings from us."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 1_000_000

    def ping_period(self) -> float | None:
        """How often to ping: half the interval, as sd_watchdog_enabled(3) recommends."""
        interval = self.watchdog_interval()
        return None if interval is None else interval / 2

    def close(self) -> None:
        self.transport.close()


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    # WATCHDOG_PID names the process systemd watches; a child that inherited the variables must not ping.
    if pid and pid != str(os.getpid()):
        return None
    return usec
