"""What `appliance token` and `appliance hub-key` print. The CLI module parses arguments and calls these."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from ..config import ApplianceConfig
from .device_key import authorized_keys_line, ensure_device_key
from .token import ensure_token, rotate_token


def print_token(state_folder: Path, out: TextIO = sys.stdout) -> None:
    """Print the device's bearer token (creating it on first use), alone on a line for scripts."""
    print(ensure_token(state_folder), file=out)


def print_rotated_token(state_folder: Path, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> None:
    """Replace the token and print the new one; the running daemon keeps the old one until restarted."""
    print(rotate_token(state_folder), file=out)
    print("token rotated: restart the appliance service for it to take effect", file=err)


def print_hub_key(config: ApplianceConfig, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> None:
    """Print the line for the hub user's `~/.ssh/authorized_keys` (creating the device key on first use)."""
    key = ensure_device_key(config.service.state_folder)
    print(authorized_keys_line(key.public_key, config.tunnel.remote_port), file=out)
    print(
        f"add this line to ~{config.tunnel.hub_user}/.ssh/authorized_keys on the hub; it allows only the "
        f"forward of hub localhost:{config.tunnel.remote_port} to this appliance",
        file=err,
    )
