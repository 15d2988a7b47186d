"""Running under systemd: the notify protocol against a real NOTIFY_SOCKET, the health-gated watchdog, the
status line, journald logging, and the unit file checked by systemd's own tools."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import logging
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from appliance.config import ApplianceConfig
from appliance.daemon import create_app
from appliance.health import WatchdogHealth
from appliance.model.split_cache import load_split_voice
from appliance.service import SystemdNotifier, log_handler
from appliance.service.journal import PriorityPrefixFormatter
from appliance.service.notify import NullTransport, SocketTransport, libsystemd_notify
from appliance.service.status_line import MAX_REASON_CHARS, format_status
from appliance.synthesis.engine import AudioChunk, SpeechEngine
from appliance.synthesis.loading import load_engine
from appliance.synthesis.request import SynthesisRequest
from appliance.synthesis.workers import DeadlineWorkers
from appliance.voices.catalog import bundled_default_voice
from tests.conftest import make_config
from tests.fake_rknnlite import FakeBoard
from tests.sshd import free_port
from tests.test_npu_backend import rk3588, speak, write_bundle

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "appliance.service"
SYSUSERS = REPO / "systemd" / "appliance.sysusers"
EXEC_START = "/opt/appliance/venv/bin/appliance"
SECURITY_THRESHOLD = 2.0
"""`systemd-analyze security` exposure of the unit (1.6 when written); lower is better, 'OK' is < 4.5."""

WATCHDOG_INTERVAL_S = 0.4  # so pings are due every 0.2 s


# --- a stand-in for systemd's end of NOTIFY_SOCKET ---


@dataclass
class NotifyListener:
    """Receives notify datagrams on a thread of its own, so it keeps listening while the event loop is
    blocked, and stamps each with the time it arrived."""

    sock: socket.socket
    received: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.sock.settimeout(0.05)
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sock.close()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            for line in data.decode().splitlines():
                self.received.append((time.monotonic(), line))

    def messages(self, prefix: str = "") -> list[str]:
        return [m for _, m in list(self.received) if m.startswith(prefix)]

    def times(self, message: str) -> list[float]:
        return [t for t, m in list(self.received) if m == message]

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; received {self.messages()}")
            await asyncio.sleep(0.02)


@pytest.fixture(params=["libsystemd", "raw"])
def systemd(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[NotifyListener]:
    """A NOTIFY_SOCKET like systemd's, notified through libsystemd (systemd-python) and through our own
    sender (as on a machine without the module)."""
    if request.param == "libsystemd" and libsystemd_notify() is None:
        pytest.skip("systemd-python is not installed")
    if request.param == "raw":
        monkeypatch.setitem(sys.modules, "systemd.daemon", None)  # import fails
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    listener = NotifyListener(sock)
    listener.start()
    yield listener
    listener.stop()


# --- the daemon: the real application around the session's engine ---


@dataclass
class WorkerProbeDouble:
    """Answers the watchdog's worker probe in place of the engine's workers; switched by the test."""

    mode: str = "healthy"  # or "hang" or "false"
    probes: int = 0

    async def probe_workers(self, timeout_s: float) -> bool:
        self.probes += 1
        if self.mode == "hang":
            await asyncio.Event().wait()
        return self.mode == "healthy"


@pytest.fixture
def worker_probe(engine: SpeechEngine, monkeypatch: pytest.MonkeyPatch) -> WorkerProbeDouble:
    double = WorkerProbeDouble()
    monkeypatch.setattr(engine, "probe_workers", double.probe_workers)
    return double


@contextlib.asynccontextmanager
async def running_daemon(engine: SpeechEngine, config: ApplianceConfig) -> AsyncIterator[None]:
    """The daemon's application, started and stopped as `appliance serve` does (without the LAN listener)."""
    runner = web.AppRunner(create_app(config, engine=engine))
    await runner.setup()  # runs the cleanup contexts' start-up halves
    try:
        yield
    finally:
        await runner.cleanup()


def pings_between(systemd: NotifyListener, start: float, end: float) -> int:
    return sum(1 for t in systemd.times("WATCHDOG=1") if start <= t <= end)


def last_status(systemd: NotifyListener) -> str:
    sent = systemd.messages("STATUS=")
    return sent[-1].removeprefix("STATUS=") if sent else ""


def streams(engine: SpeechEngine, count: int) -> list[AsyncIterator[AudioChunk]]:
    return [engine.stream(engine.prepare(SynthesisRequest(text="A stream under way.", seed=n))) for n in range(count)]


# --- readiness and status ---


async def test_ready_is_sent_when_the_daemon_starts_and_stopping_when_it_stops(
    systemd: NotifyListener, engine: SpeechEngine, state_folder: Path
) -> None:
    async with running_daemon(engine, make_config(state_folder)):
        await systemd.wait_for(lambda: "READY=1" in systemd.messages())
        assert "STOPPING=1" not in systemd.messages()
    await systemd.wait_for(lambda: "STOPPING=1" in systemd.messages())
    messages = systemd.messages()
    # The state so far is shown before the daemon says it is ready.
    (first_status,) = [m for m in messages[: messages.index("READY=1")] if m.startswith("STATUS=")]
    assert re.fullmatch(r"STATUS=voices: en_US-joe-medium=cpu\(.+\); tunnel: disabled; clients: 0", first_status)
    assert not systemd.messages("WATCHDOG=1")  # WATCHDOG_USEC unset: systemd expects no pings


async def test_a_cpu_voice_shows_why_shortened(engine: SpeechEngine) -> None:
    (voice,) = engine.health().voices
    assert voice.backend == "cpu" and len(voice.reason) > MAX_REASON_CHARS  # "no usable NPU: not a supported …"
    shortened = voice.reason[: MAX_REASON_CHARS - 1] + "…"
    assert format_status(engine.health()).startswith(f"voices: en_US-joe-medium=cpu({shortened}); ")


async def test_the_status_line_shows_the_npu_cores_in_service(
    systemd: NotifyListener, state_folder: Path, tmp_path: Path
) -> None:
    files = bundled_default_voice()
    board = FakeBoard()
    config = make_config(state_folder, **{"npu.bundles_folder": str(tmp_path / "bundles"), "npu.core_retry_s": 60})
    write_bundle(config.npu.bundles_folder, files, load_split_voice(files.onnx_path, state_folder / "split-cache"),
                 board)
    engine = await asyncio.to_thread(load_engine, config, rk3588(board))
    try:
        async with running_daemon(engine, config):
            await systemd.wait_for(lambda: "READY=1" in systemd.messages())
            assert last_status(systemd) == "voices: en_US-joe-medium=npu(3 cores); tunnel: disabled; clients: 0"
            board.fail_cores = {0}
            await speak(engine)  # core 0 fails its window and rests; the CPU finishes the request
            await systemd.wait_for(
                lambda: last_status(systemd) == "voices: en_US-joe-medium=npu(2 cores); tunnel: disabled; clients: 0")
    finally:
        board.release_hangs.set()
        await asyncio.to_thread(engine.close)


async def test_the_status_line_follows_the_streams_and_the_tunnel(
    systemd: NotifyListener, engine: SpeechEngine, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "hub_known_hosts"  # not there yet: the tunnel refuses to start
    config = make_config(tmp_path / "state", **{
        "tunnel.enabled": True, "tunnel.hub_host": "127.0.0.1", "tunnel.hub_port": free_port(),
        "tunnel.remote_port": free_port(), "tunnel.listener_port": free_port(),
        "tunnel.hub_known_hosts": str(known_hosts), "tunnel.max_backoff_s": 0.3,
    })  # fmt: skip
    async with running_daemon(engine, config):
        await systemd.wait_for(lambda: last_status(systemd).endswith("; tunnel: refused; clients: 0"))
        (one,) = streams(engine, 1)
        await anext(one)
        await systemd.wait_for(lambda: last_status(systemd).endswith("; tunnel: refused; clients: 1"))
        # A pinned key: ssh now tries the hub, which is not there.
        known_hosts.write_text(f"[127.0.0.1]:{config.tunnel.hub_port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI\n")
        await systemd.wait_for(lambda: re.search(r"; tunnel: (backoff|connecting); clients: 1$", last_status(systemd)))
        await one.aclose()
        await systemd.wait_for(lambda: re.search(r"; tunnel: (backoff|connecting); clients: 0$", last_status(systemd)))


async def test_a_burst_of_changes_is_sent_as_a_few_status_lines_ending_with_the_last(
    systemd: NotifyListener, engine: SpeechEngine, state_folder: Path
) -> None:
    async with running_daemon(engine, make_config(state_folder)):
        await systemd.wait_for(lambda: "READY=1" in systemd.messages())
        before = len(systemd.messages("STATUS="))
        burst = streams(engine, 20)
        await asyncio.gather(*(anext(stream) for stream in burst))  # 20 changes at once
        for stream in burst:  # and 20 more
            await stream.aclose()
        await systemd.wait_for(lambda: last_status(systemd).endswith("; clients: 0"))
        await asyncio.sleep(1.2)  # a line still due would come by now
    sent = [t for t, m in systemd.received if m.startswith("STATUS=")][before - 1:]
    assert len(sent) - 1 <= 3, systemd.messages("STATUS=")  # coalesced
    assert all(b - a > 0.8 for a, b in itertools.pairwise(sent))  # at most one a second


def test_a_status_text_with_a_newline_stays_one_status_line(systemd: NotifyListener) -> None:
    notifier = SystemdNotifier.from_environment()
    notifier.status("two\nlines")
    notifier.ready()
    deadline = time.monotonic() + 5
    while "READY=1" not in systemd.messages() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert systemd.messages("STATUS=") == ["STATUS=two lines"]
    notifier.close()


# --- the watchdog ---


async def test_watchdog_pings_come_at_about_half_the_interval(
    systemd: NotifyListener, monkeypatch: pytest.MonkeyPatch, engine: SpeechEngine, state_folder: Path
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", str(int(WATCHDOG_INTERVAL_S * 1e6)))
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    async with running_daemon(engine, make_config(state_folder)):
        start = time.monotonic()
        await asyncio.sleep(2.0)
        end = time.monotonic()
    pings = pings_between(systemd, start, end)
    # Due every 0.2 s, so about 10 in 2 s; generous bounds for a busy machine, but never the 0 or 20+
    # of a pinger that is off or pings at the full (or a doubled) rate.
    assert 5 <= pings <= 14, pings
    gaps = [b - a for a, b in itertools.pairwise(systemd.times("WATCHDOG=1"))]
    assert WATCHDOG_INTERVAL_S / 4 < statistics.median(gaps) < WATCHDOG_INTERVAL_S, gaps


@pytest.mark.parametrize("mode", ["hang", "false"])
async def test_a_stuck_worker_stops_the_pings_and_a_recovered_one_resumes_them(
    systemd: NotifyListener, monkeypatch: pytest.MonkeyPatch, mode: str, engine: SpeechEngine,
    worker_probe: WorkerProbeDouble, state_folder: Path,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", str(int(WATCHDOG_INTERVAL_S * 1e6)))
    async with running_daemon(engine, make_config(state_folder)):
        await systemd.wait_for(lambda: len(systemd.messages("WATCHDOG=1")) >= 2)
        assert engine.health().watchdog == WatchdogHealth(True)
        worker_probe.mode = mode
        await asyncio.sleep(0.5)  # a ping already under way may still land
        start = time.monotonic()
        await asyncio.sleep(1.0)
        assert pings_between(systemd, start, time.monotonic()) == 0
        assert engine.health().watchdog == WatchdogHealth(False, "inference workers not answering")
        trouble = "; clients: 0; watchdog: not pinging (inference workers not answering)"
        await systemd.wait_for(lambda: last_status(systemd).endswith(trouble))
        worker_probe.mode = "healthy"
        recovered = time.monotonic()
        await systemd.wait_for(lambda: pings_between(systemd, recovered, time.monotonic()) >= 2)
    assert engine.health().watchdog is None  # the daemon stopped: nothing pings


async def test_a_wedged_inference_thread_stops_the_pings(
    systemd: NotifyListener, monkeypatch: pytest.MonkeyPatch, engine: SpeechEngine, state_folder: Path
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", str(int(WATCHDOG_INTERVAL_S * 1e6)))
    workers = DeadlineWorkers(1)
    # Workers as the engine has them, probed as the engine does, but ones the test can wedge: a job running
    # longer than `stuck_after_s` (0.3 s here) is a wedge.
    monkeypatch.setattr(engine, "probe_workers", lambda timeout_s: workers.responsive(timeout_s, 0.3))
    release = threading.Event()
    try:
        async with running_daemon(engine, make_config(state_folder)):
            await systemd.wait_for(lambda: len(systemd.messages("WATCHDOG=1")) >= 2)
            workers.submit(release.wait)  # the only worker is now stuck
            await asyncio.sleep(0.5)
            start = time.monotonic()
            await asyncio.sleep(1.0)
            assert pings_between(systemd, start, time.monotonic()) == 0
            release.set()
            recovered = time.monotonic()
            await systemd.wait_for(lambda: pings_between(systemd, recovered, time.monotonic()) >= 2)
    finally:
        release.set()
        workers.shutdown()


async def test_workers_busy_with_long_jobs_keep_the_pings_going(
    systemd: NotifyListener, monkeypatch: pytest.MonkeyPatch, engine: SpeechEngine, state_folder: Path
) -> None:
    """What an emulated board does: every worker held by one long window, longer than the probe's timeout
    (0.1 s) and than WatchdogSec, yet younger than `stuck_after_s`: busy, not wedged, so pings go on."""
    monkeypatch.setenv("WATCHDOG_USEC", str(int(WATCHDOG_INTERVAL_S * 1e6)))
    workers = DeadlineWorkers(1)
    monkeypatch.setattr(engine, "probe_workers", lambda timeout_s: workers.responsive(timeout_s, 30.0))
    try:
        async with running_daemon(engine, make_config(state_folder)):
            await systemd.wait_for(lambda: len(systemd.messages("WATCHDOG=1")) >= 2)
            long_window = workers.submit(time.sleep, 1.5)
            await asyncio.sleep(0.2)
            start = time.monotonic()
            await asyncio.sleep(1.0)
            assert not long_window.done()
            assert pings_between(systemd, start, time.monotonic()) >= 3
    finally:
        workers.shutdown()


async def test_a_blocked_event_loop_sends_no_pings_while_blocked(
    systemd: NotifyListener, monkeypatch: pytest.MonkeyPatch, engine: SpeechEngine, worker_probe: WorkerProbeDouble,
    state_folder: Path,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", str(int(WATCHDOG_INTERVAL_S * 1e6)))
    async with running_daemon(engine, make_config(state_folder)):
        await systemd.wait_for(lambda: len(systemd.messages("WATCHDOG=1")) >= 2)
        start = time.monotonic()
        time.sleep(1.2)  # blocks the event loop, as a synchronous call in a handler would
        end = time.monotonic()
        # 0.1 s of grace at the start for a ping sent just before the block but stamped after it.
        assert pings_between(systemd, start + 0.1, end) == 0
        await systemd.wait_for(lambda: pings_between(systemd, end, time.monotonic()) >= 2)


async def test_a_watchdog_meant_for_another_process_is_not_pinged(
    systemd: NotifyListener, monkeypatch: pytest.MonkeyPatch, engine: SpeechEngine, worker_probe: WorkerProbeDouble,
    state_folder: Path,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", str(int(WATCHDOG_INTERVAL_S * 1e6)))
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    async with running_daemon(engine, make_config(state_folder)):
        await systemd.wait_for(lambda: "READY=1" in systemd.messages())
        await asyncio.sleep(0.6)
    assert not systemd.messages("WATCHDOG=1")


async def test_with_health_checks_off_the_unit_is_still_pinged(
    systemd: NotifyListener, monkeypatch: pytest.MonkeyPatch, engine: SpeechEngine, worker_probe: WorkerProbeDouble,
    state_folder: Path,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", str(int(WATCHDOG_INTERVAL_S * 1e6)))
    worker_probe.mode = "false"
    async with running_daemon(engine, make_config(state_folder, **{"service.watchdog": False})):
        await systemd.wait_for(lambda: len(systemd.messages("WATCHDOG=1")) >= 2)
    assert worker_probe.probes == 0


# --- the notify protocol itself ---


def test_notifications_reach_an_abstract_socket() -> None:
    name = f"appliance-test-{uuid.uuid4().hex}"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind("\0" + name)
    receiver.settimeout(5)
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": "@" + name})
    assert isinstance(notifier.transport, SocketTransport)
    try:
        assert notifier.ready()
        assert receiver.recv(100) == b"READY=1"
    finally:
        notifier.close()
        receiver.close()


def test_without_systemd_notifications_are_quietly_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = SystemdNotifier.from_environment()
    assert isinstance(notifier.transport, NullTransport)
    assert not notifier.ready()
    assert notifier.ping_period() is None


def test_a_vanished_notify_socket_does_not_raise(tmp_path: Path) -> None:
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.watchdog() is False
    notifier.close()


def test_the_watchdog_interval_comes_from_watchdog_usec() -> None:
    pid = str(os.getpid())
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}
    assert SystemdNotifier.from_environment(env).watchdog_interval() == 30.0
    assert SystemdNotifier.from_environment(env).ping_period() == 15.0
    assert SystemdNotifier.from_environment({**env, "WATCHDOG_USEC": "0"}).watchdog_interval() is None
    assert SystemdNotifier.from_environment({**env, "WATCHDOG_USEC": "x"}).watchdog_interval() is None
    assert SystemdNotifier.from_environment({**env, "WATCHDOG_PID": "1"}).watchdog_interval() is None


# --- journald logging ---


def _journal_stream_env(stream: io.TextIOBase) -> dict[str, str]:
    """JOURNAL_STREAM as systemd sets it when `stream` is the one it connected to the journal."""
    st = os.fstat(stream.fileno())
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def test_logs_go_to_the_journal_natively_when_stderr_is_the_journal_stream(tmp_path: Path) -> None:
    from systemd.journal import JournalHandler  # systemd-python: a test dependency

    with (tmp_path / "stream").open("w") as stream:
        handler = log_handler(_journal_stream_env(stream), stream)
    assert isinstance(handler, JournalHandler)
    sent: list[tuple[str, dict[str, Any]]] = []
    handler.send = lambda text, /, **fields: sent.append((text, fields))  # instead of journald's socket
    handler.emit(logging.LogRecord("appliance.engine", logging.WARNING, __file__, 1, "core %d resting", (2,), None))
    [(message, fields)] = sent
    assert message == "appliance.engine: core 2 resting"
    assert fields["PRIORITY"] == "4" and fields["SYSLOG_IDENTIFIER"] == "appliance"
    assert (tmp_path / "stream").read_text() == "", "nothing went to the stream"


def test_without_systemd_python_journal_lines_on_stderr_carry_their_priority(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "systemd.journal", None)  # `from systemd.journal import …` fails
    with (tmp_path / "stream").open("w") as stream:
        handler = log_handler(_journal_stream_env(stream), stream)
        handler.emit(logging.LogRecord("appliance.engine", logging.WARNING, __file__, 1, "core %d resting", (2,),
                                       None))
    assert isinstance(handler.formatter, PriorityPrefixFormatter)
    assert (tmp_path / "stream").read_text() == "<4>appliance.engine: core 2 resting\n"


def test_off_systemd_log_lines_are_plain_and_timestamped() -> None:
    stream = io.StringIO()
    plain = log_handler({}, stream)
    plain.emit(logging.LogRecord("appliance.engine", logging.WARNING, __file__, 1, "core %d resting", (2,), None))
    assert isinstance(plain, logging.StreamHandler)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING appliance.engine: core 2 resting\n",
                        stream.getvalue())


def test_without_the_module_journal_lines_carry_their_priority() -> None:
    record = logging.LogRecord("appliance.engine", logging.WARNING, __file__, 1, "core %d resting", (2,), None)
    assert PriorityPrefixFormatter("%(name)s: %(message)s").format(record) == ("<4>appliance.engine: core 2 resting")


# --- the unit file, checked by systemd's tools ---


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    return path


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """Verified inside a scratch root holding what the board image provides: the standard units and an
    executable at ExecStart's path. Any warning (unknown key, bad value, missing binary) fails the test."""
    analyze = _systemd_analyze()
    units = tmp_path / "usr/lib/systemd/system"
    shutil.copytree("/usr/lib/systemd/system", units, symlinks=True)
    python = tmp_path / EXEC_START.lstrip("/")
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    installed = tmp_path / "etc/systemd/system/appliance.service"
    installed.parent.mkdir(parents=True)
    shutil.copy(UNIT, installed)
    result = subprocess.run(
        [analyze, "verify", f"--root={tmp_path}", "--man=no", str(installed)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == "", result.stdout + result.stderr


def test_the_unit_is_hardened(capsys: pytest.CaptureFixture[str]) -> None:
    analyze = _systemd_analyze()
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for appliance\.service: ([\d.]+) (\w+)", result.stdout)
    assert match, result.stdout
    with capsys.disabled():
        print(f"\nsystemd-analyze security: exposure {match[1]} {match[2]}")
    assert float(match[1]) <= SECURITY_THRESHOLD
    text = UNIT.read_text()
    for line in [
        "Type=notify",
        "WatchdogSec=30",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "StateDirectory=appliance",
        "SupplementaryGroups=render video",
        "DeviceAllow=char-drm rw",
        "SystemCallFilter=@system-service",
        f"ExecStart={EXEC_START} --config /etc/appliance/config.toml serve",
    ]:
        assert line in text.splitlines(), line
    assert "PrivateDevices=yes" not in text  # it would hide the NPU


def test_the_service_user_is_created_by_sysusers(tmp_path: Path) -> None:
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        pytest.skip("systemd-sysusers is not installed (Debian package systemd)")
    (tmp_path / "etc").mkdir()
    result = subprocess.run([sysusers, f"--root={tmp_path}", str(SYSUSERS)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    passwd = (tmp_path / "etc/passwd").read_text()
    group = (tmp_path / "etc/group").read_text()
    assert re.search(r"^appliance:x:\d+:\d+:Text-to-speech appliance:/var/lib/appliance:", passwd, re.M)
    assert re.search(r"^render:x:\d+:appliance$", group, re.M)
    assert re.search(r"^video:x:\d+:appliance$", group, re.M)
