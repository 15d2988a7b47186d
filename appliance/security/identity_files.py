"""Where the device's secrets live in the state folder, and how they are written: a private folder (0700),
private files (0600), created whole or not at all and never overwritten by accident."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

IDENTITY_FOLDER_NAME: Final = "identity"
FOLDER_MODE: Final = 0o700
FILE_MODE: Final = 0o600


@dataclass(frozen=True)
class IdentityFiles:
    """The secrets' own subfolder of the state folder. It is separate because systemd resets the mode of the
    state folder itself (StateDirectoryMode=, 0755 by default) on every start."""

    folder: Path

    @classmethod
    def in_state_folder(cls, state_folder: Path) -> IdentityFiles:
        return cls(state_folder / IDENTITY_FOLDER_NAME)

    @property
    def private_key(self) -> Path:
        return self.folder / "device_ed25519"

    @property
    def public_key(self) -> Path:
        return self.folder / "device_ed25519.pub"

    @property
    def token(self) -> Path:
        return self.folder / "token"

    def ensure_folder(self) -> Path:
        """Create the folder (and the state folder above it) private to this user; tighten it if it exists."""
        self.folder.parent.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        self.folder.mkdir(mode=FOLDER_MODE, exist_ok=True)
        os.chmod(self.folder, FOLDER_MODE)
        return self.folder


def create_secret_file(path: Path, data: str) -> bool:
    """Write `path` (0600) only if it does not exist yet; False when it already did (then it is untouched).
    Written to a temporary file first and linked into place, so a crash never leaves a half-written one."""
    temporary = _write_temporary(path, data)
    try:
        os.link(temporary, path)
    except FileExistsError:
        return False
    finally:
        temporary.unlink()
    return True


def replace_secret_file(path: Path, data: str) -> None:
    """Replace `path` (0600) atomically, for deliberate rotation."""
    temporary = _write_temporary(path, data)
    try:
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _write_temporary(path: Path, data: str) -> Path:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise
    os.chmod(name, FILE_MODE)
    return Path(name)
