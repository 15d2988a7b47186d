"""The real daemon as users run it: `python -m appliance serve` in its own process, with a config file, its
log captured to a file, both listeners on loopback (the tunnel's listener without a hub: only the listener
is under test)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.sshd import free_port

REPO = Path(__file__).resolve().parent.parent


@dataclass
class DaemonProcess:
    process: subprocess.Popen[bytes]
    lan_url: str
    tunnel_url: str
    state_folder: Path
    log_path: Path
    config_path: Path
    wyoming_port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


def write_config(folder: Path, lan_port: int, tunnel_port: int, extra: str = "", wyoming_port: int = 0,
                 mdns_instance: str | None = None) -> Path:
    """`mdns_instance`: announce (on loopback) under this name; by default nothing is announced."""
    mdns = f"enabled = true\ninstance_name = {json.dumps(mdns_instance)}" if mdns_instance else "enabled = false"
    (folder / "state").mkdir(parents=True, exist_ok=True)
    config = folder / "config.toml"
    config.write_text(f"""
[server]
host = "127.0.0.1"
port = {lan_port}

[mdns]
{mdns}

[wyoming]
host = "127.0.0.1"
port = {wyoming_port or free_port()}

[tunnel]
# The listener the tunnel forwards to runs; with no hub named, no ssh is started.
enabled = true
listener_port = {tunnel_port}

[service]
state_folder = "{folder / 'state'}"
watchdog = false
{extra}
""")
    return config


@contextlib.contextmanager
def running_daemon(folder: Path, extra_config: str = "", timeout_s: float = 90.0,
                   wait_ready: bool = True, mdns_instance: str | None = None) -> Iterator[DaemonProcess]:
    """`wait_ready`: yield once /healthz answers (the voices are loaded); else as soon as it is started."""
    lan_port, tunnel_port, wyoming_port = free_port(), free_port(), free_port()
    config = write_config(folder, lan_port, tunnel_port, extra_config, wyoming_port, mdns_instance)
    log_path = folder / "daemon.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APPLIANCE_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "appliance", "--config", str(config), "serve"],
                                   cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    daemon = DaemonProcess(process, f"http://127.0.0.1:{lan_port}", f"http://127.0.0.1:{tunnel_port}",
                           folder / "state", log_path, config, wyoming_port)
    try:
        deadline = time.monotonic() + timeout_s
        while wait_ready:
            if process.poll() is not None:
                raise RuntimeError(f"the daemon exited with {process.returncode}:\n{daemon.log_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{daemon.lan_url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the daemon did not answer within {timeout_s} s:\n{daemon.log_text()[-3000:]}")
            time.sleep(0.2)
        yield daemon
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the daemon's clean shutdown), then SIGKILL if it has not ended within 20 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
