"""Keeps the ssh reverse tunnel running: one ssh process at a time, restarted with exponential backoff,
its state reported as a TunnelHealth on every change.

States: `connecting` (ssh started, forward not confirmed yet), `up` (the hub confirmed the remote forward),
`backoff` (waiting before the next attempt), `refused` (won't connect until something is fixed: the pinned
known_hosts file is missing or doesn't match the hub's key; checked again every `refused_retry_s`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Final

from ..health import TunnelHealth, TunnelState
from .backoff import Backoff
from .ssh_command import TunnelTarget, tunnel_command
from .ssh_stderr import SshEvent, classify, is_debug

log = logging.getLogger(__name__)

STABLE_AFTER_S: Final = 60.0
STOP_TIMEOUT_S: Final = 5.0
KEPT_STDERR_LINES: Final = 3


@dataclass(frozen=True)
class SshExit:
    """How one ssh process ended."""

    message: str
    up_for_s: float | None = None
    """How long the forward was up, or None if it never came up."""
    host_key_refused: bool = False


@dataclass
class TunnelSupervisor:
    """Owns the tunnel's state; runs on the event loop, where `report` is called."""

    target: TunnelTarget
    report: Callable[[TunnelHealth], None]
    """Told every change (the daemon passes the engine's `HealthBoard.report_tunnel`)."""
    backoff: Backoff
    stable_after_s: float = STABLE_AFTER_S
    """A connection up this long resets the backoff to its initial delay."""
    refused_retry_s: float = 60.0
    ssh: str = "ssh"
    stop_timeout_s: float = STOP_TIMEOUT_S
    _reconnects: int = field(default=0, init=False)
    _state: TunnelHealth = field(init=False)

    def __post_init__(self) -> None:
        self._state = TunnelHealth(TunnelState.CONNECTING, hub=self.target.hub, remote_port=self.target.remote_port)

    def start(self) -> asyncio.Task[None]:
        """Report `connecting` at once, then supervise in a task until it is cancelled, which stops the ssh
        process and reports the tunnel stopped."""
        self._publish(TunnelState.CONNECTING, reason=None, last_error=None)
        return asyncio.create_task(self._run(), name="tunnel-supervisor")

    async def _run(self) -> None:
        try:
            await self._supervise()
        finally:
            self._publish(TunnelState.STOPPED, reason=None)

    async def _supervise(self) -> None:
        started = 0
        while True:
            refusal = self._refusal()
            if refusal is not None:
                self._refuse("known_hosts", refusal)
                await asyncio.sleep(self.refused_retry_s)
                continue
            if started:
                self._reconnects += 1
            started += 1
            if self._state.state is not TunnelState.REFUSED:  # a refusal stands until ssh gets through
                self._publish(TunnelState.CONNECTING, reason=None)
            ended = await self._run_ssh()
            if ended.up_for_s is not None and ended.up_for_s >= self.stable_after_s:
                self.backoff.reset()
            if ended.host_key_refused:
                self._refuse("host_key", ended.message)
                await asyncio.sleep(self.refused_retry_s)
                continue
            delay = self.backoff.next_delay()
            log.warning("tunnel to %s down (%s); retrying in %.1f s", self.target.hub, ended.message, delay)
            self._publish(TunnelState.BACKOFF, last_error=ended.message)
            await asyncio.sleep(delay)

    def _refusal(self) -> str | None:
        """Never trust on first use: without a pinned host key ssh is not even started."""
        pinned = self.target.known_hosts
        try:
            if not pinned.read_text(encoding="utf-8", errors="replace").strip():
                return f"the pinned known_hosts file {pinned} is empty: add the hub's verified host key"
        except FileNotFoundError:
            return f"the pinned known_hosts file {pinned} is missing: add the hub's verified host key"
        except OSError as e:
            return f"the pinned known_hosts file {pinned} can't be read: {e.strerror}"
        return None

    async def _run_ssh(self) -> SshExit:
        argv = tunnel_command(self.target, self.ssh)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # a Ctrl-C meant for the daemon reaches ssh only through us
            )
        except OSError as e:
            return SshExit(f"cannot run {self.ssh}: {e.strerror} (Debian package openssh-client)")
        up_at: float | None = None
        host_key_refused = False
        summary: str | None = None
        recent: collections.deque[str] = collections.deque(maxlen=KEPT_STDERR_LINES)
        try:
            assert process.stderr is not None
            while line := await _read_line(process.stderr):
                event = classify(line)
                if is_debug(line) and event is None:
                    log.debug("ssh: %s", line)
                    continue
                log.info("ssh: %s", line)
                if event is SshEvent.FORWARD_UP and up_at is None:
                    up_at = time.monotonic()
                    log.info("tunnel up: %s localhost:%d -> this appliance", self.target.hub, self.target.remote_port)
                    self._publish(TunnelState.UP, reason=None)
                elif event is SshEvent.HOST_KEY_REFUSED:
                    host_key_refused = True
                    summary = (
                        f"the hub's host key is not the one pinned in {self.target.known_hosts}: refused "
                        "(verify the hub's fingerprint out of band and update the file)"
                    )
                elif event is SshEvent.FORWARD_REFUSED:
                    summary = f"the hub refused the forward of its port {self.target.remote_port} ({line})"
                elif event is SshEvent.AUTH_REFUSED:
                    summary = f"the hub refused the device key ({line}); is its authorized_keys line in place?"
                elif not is_debug(line):
                    recent.append(line)
            returncode = await process.wait()
        finally:
            await self._stop(process)
        up_for_s = None if up_at is None else time.monotonic() - up_at
        if summary is None:
            summary = "; ".join(recent) if recent else f"ssh exited with status {returncode}"
        return SshExit(summary, up_for_s, host_key_refused)

    async def _stop(self, process: asyncio.subprocess.Process) -> None:
        if process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), self.stop_timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    def _refuse(self, reason: str, message: str) -> None:
        if self._state.last_error != message:
            log.error("tunnel refused: %s", message)
        self._publish(TunnelState.REFUSED, reason=reason, last_error=message)

    def _publish(self, state: TunnelState, **changes: str | None) -> None:
        """The new state; `reason` and `last_error` stay as they were unless given."""
        self._state = replace(self._state, state=state, reconnects=self._reconnects, **changes)
        self.report(self._state)


async def _read_line(stream: asyncio.StreamReader) -> str:
    """The next stderr line without its newline; "" at the end. An overlong line is skipped, not fatal."""
    while True:
        try:
            raw = await stream.readline()
        except ValueError:
            continue
        if not raw:
            return ""
        line = raw.decode("utf-8", "replace").rstrip()
        if line:
            return line
