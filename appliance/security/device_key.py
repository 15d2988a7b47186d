"""The device's ed25519 ssh key, which the hub knows it by: made on first use with ssh-keygen, never
replaced afterwards, and the hub-side `authorized_keys` line that confines it to its own forward."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .identity_files import FILE_MODE, IdentityFiles, create_secret_file, replace_secret_file

SSH_KEYGEN_TIMEOUT_S: Final = 30.0


class DeviceKeyError(RuntimeError):
    """ssh-keygen is missing or failed."""


@dataclass(frozen=True)
class DeviceKey:
    private_key: Path
    public_key: str
    """One OpenSSH public key line: `ssh-ed25519 AAAA... appliance@host`."""


def ensure_device_key(state_folder: Path, ssh_keygen: str = "ssh-keygen") -> DeviceKey:
    """The device key, generated (0600, no passphrase) the first time and reused from then on."""
    files = IdentityFiles.in_state_folder(state_folder)
    files.ensure_folder()
    if not files.private_key.exists():
        _generate_into(files, ssh_keygen)
    if not files.public_key.exists():  # derivable, so a lost .pub is no reason for a new identity
        public = _run(ssh_keygen, "-y", "-f", str(files.private_key))
        replace_secret_file(files.public_key, public.strip() + "\n")
    return DeviceKey(files.private_key, files.public_key.read_text(encoding="ascii").strip())


def authorized_keys_line(public_key: str, remote_port: int) -> str:
    """The hub-side `authorized_keys` line for this device: only its own remote forward on the hub's
    loopback, no shell, no pty, no agent or X11 forwarding, no local forwards."""
    if not 0 < remote_port < 65536:
        raise ValueError(f"tunnel.remote_port must be set to a port (1-65535), got {remote_port}")
    key = public_key.strip()
    if not key.startswith("ssh-") or "\n" in key:
        raise ValueError("expected one OpenSSH public key line")
    return f'restrict,port-forwarding,permitlisten="localhost:{remote_port}",command="/bin/false" {key}'


def _generate_into(files: IdentityFiles, ssh_keygen: str) -> None:
    scratch = Path(tempfile.mkdtemp(dir=files.folder, prefix=".keygen."))
    try:
        key = scratch / "key"
        comment = f"appliance@{socket.gethostname()}"
        _run(ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key))
        public = key.with_name("key.pub")
        key.chmod(FILE_MODE)
        public.chmod(FILE_MODE)
        # Whole key or none, and never over one that exists (another process may have won the race).
        if create_secret_file(files.private_key, key.read_text(encoding="ascii")):
            replace_secret_file(files.public_key, public.read_text(encoding="ascii"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(*argv: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=SSH_KEYGEN_TIMEOUT_S, check=False)
    except FileNotFoundError as e:
        raise DeviceKeyError(f"{argv[0]} not found (Debian package openssh-client)") from e
    except subprocess.TimeoutExpired as e:
        raise DeviceKeyError(f"{argv[0]} took longer than {SSH_KEYGEN_TIMEOUT_S:.0f} s") from e
    if done.returncode != 0:
        raise DeviceKeyError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout
