"""The OpenSSH client command line for the reverse tunnel, built only from the appliance's config.

Nothing outside this command decides how ssh behaves: `-F none` keeps user and system ssh_config out, the
hub's host key must already be in the pinned known_hosts file (never trust on first use, never updated by
ssh), and only the device key is offered, without an agent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ..config import TunnelConfig

CONNECT_TIMEOUT_S: Final = 15
SERVER_ALIVE_COUNT_MAX: Final = 3
LISTENER_HOST: Final = "127.0.0.1"
# The name the hub binds the forward to and that the authorized_keys `permitlisten` option names.
HUB_LISTEN_HOST: Final = "localhost"


@dataclass(frozen=True)
class TunnelTarget:
    """Everything the ssh command needs, checked: where the hub is, which ports, which files."""

    hub_host: str
    hub_port: int
    hub_user: str
    remote_port: int
    listener_port: int
    known_hosts: Path
    identity_file: Path
    server_alive_interval_s: int

    @classmethod
    def from_config(cls, config: TunnelConfig, identity_file: Path) -> TunnelTarget:
        problem = tunnel_config_problem(config)
        if problem is not None or config.hub_known_hosts is None:
            raise ValueError(problem)
        return cls(
            hub_host=config.hub_host,
            hub_port=config.hub_port,
            hub_user=config.hub_user,
            remote_port=config.remote_port,
            listener_port=config.listener_port,
            known_hosts=config.hub_known_hosts,
            identity_file=identity_file,
            server_alive_interval_s=config.server_alive_interval_s,
        )

    @property
    def hub(self) -> str:
        return f"{self.hub_user}@{self.hub_host}:{self.hub_port}"


def tunnel_config_problem(config: TunnelConfig) -> str | None:
    """Why this [tunnel] section can't work, naming the key; None when it can."""
    if not config.hub_host or config.hub_host.startswith("-") or _has_space(config.hub_host):
        return "tunnel.hub_host must name the hub (a host name or address)"
    if not config.hub_user or config.hub_user.startswith("-") or _has_space(config.hub_user):
        return "tunnel.hub_user must name the user on the hub"
    for key in ("hub_port", "remote_port", "listener_port"):
        if not 0 < getattr(config, key) < 65536:
            return f"tunnel.{key} must be a port (1-65535)"
    if config.hub_known_hosts is None:
        return "tunnel.hub_known_hosts must name the known_hosts file that pins the hub's host key"
    if '"' in str(config.hub_known_hosts):
        return "tunnel.hub_known_hosts must not contain double quotes"
    if config.server_alive_interval_s < 1:
        return "tunnel.server_alive_interval_s must be at least 1"
    return None


def ssh_options(target: TunnelTarget) -> list[str]:
    """Options shared by the tunnel and any other connection to the hub as this device (tests use them)."""
    options = {
        "BatchMode": "yes",
        "StrictHostKeyChecking": "yes",
        "UserKnownHostsFile": _config_path(target.known_hosts),
        "GlobalKnownHostsFile": "/dev/null",
        "UpdateHostKeys": "no",
        "CheckHostIP": "no",
        "IdentitiesOnly": "yes",
        "IdentityAgent": "none",
        "PubkeyAuthentication": "yes",
        "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no",
        "ForwardAgent": "no",
        "ForwardX11": "no",
        "ControlMaster": "no",
        "ControlPath": "none",
        "PermitLocalCommand": "no",
        "ConnectTimeout": str(CONNECT_TIMEOUT_S),
        "ServerAliveInterval": str(target.server_alive_interval_s),
        "ServerAliveCountMax": str(SERVER_ALIVE_COUNT_MAX),
    }
    argv = ["-F", "none", "-i", str(target.identity_file), "-p", str(target.hub_port), "-l", target.hub_user]
    for name, value in options.items():
        argv += ["-o", f"{name}={value}"]
    return argv


def tunnel_command(target: TunnelTarget, ssh: str = "ssh") -> list[str]:
    """`ssh -N -R localhost:REMOTE:127.0.0.1:LISTENER hub`, verbose so the forward's success shows on stderr.
    (-N rather than SessionType=none, which OpenSSH before 8.7, e.g. Debian 11's, rejects.)"""
    forward = f"{HUB_LISTEN_HOST}:{target.remote_port}:{LISTENER_HOST}:{target.listener_port}"
    return [
        ssh,
        "-v",
        "-N",
        "-T",
        *ssh_options(target),
        "-o",
        "ExitOnForwardFailure=yes",
        "-R",
        forward,
        target.hub_host,
    ]


def _config_path(path: Path) -> str:
    # ssh expands % tokens and splits on spaces in file options: escape the one, quote the other.
    return '"' + str(path).replace("%", "%%") + '"'


def _has_space(value: str) -> bool:
    return any(c.isspace() for c in value)
