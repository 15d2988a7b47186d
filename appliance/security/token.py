"""The device's bearer token: made on first use, kept in the state folder, replaced only by rotation."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Final

from .identity_files import IdentityFiles, create_secret_file, replace_secret_file

TOKEN_BYTES: Final = 32
MIN_TOKEN_CHARS: Final = 32


class TokenError(RuntimeError):
    """The token file exists but holds no usable token; the message names the file (never its content)."""


def ensure_token(state_folder: Path) -> str:
    """The device's token, created (0600) on first use and never overwritten afterwards."""
    files = IdentityFiles.in_state_folder(state_folder)
    files.ensure_folder()
    if not files.token.exists():
        create_secret_file(files.token, new_token() + "\n")  # if another process won the race, use its token
    return read_token(state_folder)


def read_token(state_folder: Path) -> str:
    path = IdentityFiles.in_state_folder(state_folder).token
    token = path.read_text(encoding="ascii").strip()
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise TokenError(f"{path} does not hold a usable token; rotate it with `appliance rotate-token`")
    return token


def rotate_token(state_folder: Path) -> str:
    """Replace the token with a new one; clients holding the old one are refused from the next start on."""
    files = IdentityFiles.in_state_folder(state_folder)
    files.ensure_folder()
    token = new_token()
    replace_secret_file(files.token, token + "\n")
    return token


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)
