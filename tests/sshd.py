"""A throwaway OpenSSH server on loopback playing the hub in tests: its own config, host key and
authorized_keys file in a temporary folder, run in the foreground (`-D -e`) so a test can kill it,
connections and all, like a hub that crashed."""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

SSHD: Final = Path("/usr/sbin/sshd")
PRIVSEP_FOLDER: Final = Path("/run/sshd")
START_TIMEOUT_S: Final = 5.0
STOP_TIMEOUT_S: Final = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def sshd_unavailable_reason() -> str | None:
    """Why a test hub can't run here, or None when it can."""
    if not SSHD.exists():
        return f"{SSHD} is missing (Debian package openssh-server)"
    if not PRIVSEP_FOLDER.is_dir() and os.geteuid() != 0:
        return f"sshd needs {PRIVSEP_FOLDER}, which only root can create"
    return None


def generate_key(path: Path, comment: str = "test") -> str:
    """An ed25519 key pair at `path`; returns the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        timeout=10,
    )
    return path.with_name(path.name + ".pub").read_text().strip()


@dataclass
class LoopbackHub:
    """An sshd on 127.0.0.1:`port`, accepting the current user with the keys in `authorized_keys`."""

    folder: Path
    port: int = field(default_factory=free_port)
    user: str = field(default_factory=getpass.getuser)
    _process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.host_key_public = generate_key(self.host_key, comment="test-hub")
        self.authorized_keys.write_text("")
        self.config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.folder / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    f"AllowUsers {self.user}",
                    "StrictModes no",
                    "UsePAM no",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "AllowTcpForwarding remote",
                    "GatewayPorts no",
                    "X11Forwarding no",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )

    @property
    def host_key(self) -> Path:
        return self.folder / "ssh_host_ed25519_key"

    @property
    def config(self) -> Path:
        return self.folder / "sshd_config"

    @property
    def authorized_keys(self) -> Path:
        return self.folder / "authorized_keys"

    @property
    def log(self) -> Path:
        return self.folder / "sshd.log"

    def known_hosts_line(self) -> str:
        """What `ssh-keyscan -p PORT 127.0.0.1` would print, i.e. the pin for this hub."""
        return f"[127.0.0.1]:{self.port} {self.host_key_public}\n"

    def start(self) -> None:
        PRIVSEP_FOLDER.mkdir(mode=0o755, exist_ok=True)
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not port_open(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"test sshd did not start:\n{self.log.read_text()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill sshd and every connection it serves. Each connection's sshd calls setsid(), so they are
        found as descendants of the listener rather than by process group."""
        if self._process is None:
            return
        process, self._process = self._process, None
        connections = _descendants(process.pid)
        process.kill()
        for pid in connections:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name (2nd field) may hold spaces; the parent pid is the 2nd field after it.
            fields = stat.read_text().rpartition(")")[2].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, ValueError, IndexError):
            continue
    found: list[int] = []
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found
