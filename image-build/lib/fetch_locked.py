"""Downloads a file named in a lock file and refuses it unless its sha256 is the published one recorded there.

    python3 fetch_locked.py LOCKFILE ENTRY OUT      (exit 0: OUT is the verified file; 2: refused, with the reason)
    python3 fetch_locked.py LOCKFILE --check         (every entry complete? exit 2 with what is missing)

The lock file is TOML: one table per download with `url` and `sha256` (64 hex digits, the publisher's own value).
An entry without them stops the build before any download: a checksum is never guessed or taken on first use.
"""

from __future__ import annotations

import hashlib
import re
import sys
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path


class Refused(Exception):
    """The lock file is incomplete or a download does not match it; the message says what to do."""


@dataclass(frozen=True)
class LockedFile:
    name: str
    what: str
    url: str
    sha256: str
    extra: dict[str, str]

    def problem(self) -> str | None:
        if not self.url:
            return f"[{self.name}] has no url: find the pinned file ({self.what}) and record its URL"
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            return (
                f"[{self.name}] has no published sha256 ({self.sha256!r}): copy the value the publisher "
                f"publishes for {self.url} into the lock file; it cannot be read from this machine"
            )
        return None


def read_lock(path: Path) -> dict[str, LockedFile]:
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise Refused(f"{path}: not valid TOML: {e}") from e
    entries = {}
    for name, table in raw.items():
        if not isinstance(table, dict):
            raise Refused(f"{path}: {name} must be a table")
        unknown = {k for k, v in table.items() if not isinstance(v, str)}
        if unknown:
            raise Refused(f"{path}: [{name}] {', '.join(sorted(unknown))} must be strings")
        entries[name] = LockedFile(
            name,
            table.get("what", name),
            table.get("url", ""),
            table.get("sha256", "").lower(),
            {k: v for k, v in table.items() if k not in {"what", "url", "sha256"}},
        )
    return entries


def verify(file: Path, entry: LockedFile) -> None:
    digest = hashlib.sha256()
    with file.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != entry.sha256:
        raise Refused(
            f"[{entry.name}] {file} has sha256 {digest.hexdigest()}, the lock file says {entry.sha256}: "
            "refused (a changed or corrupted download)"
        )


def fetch(entry: LockedFile, out: Path) -> None:
    problem = entry.problem()
    if problem:
        raise Refused(problem)
    if out.exists():  # a cached download is checked again, never trusted
        verify(out, entry)
        return
    partial = out.with_name(out.name + ".part")
    with urllib.request.urlopen(entry.url, timeout=60) as response, partial.open("wb") as f:
        while block := response.read(1 << 20):
            f.write(block)
    try:
        verify(partial, entry)
    except Refused:
        partial.unlink()
        raise
    partial.rename(out)


def main(argv: list[str]) -> int:
    try:
        entries = read_lock(Path(argv[1]))
        if argv[2] == "--check":
            problems = [p for e in entries.values() if (p := e.problem())]
            if problems:
                raise Refused("the lock file is incomplete:\n  " + "\n  ".join(problems))
            return 0
        if argv[2] not in entries:
            raise Refused(f"no [{argv[2]}] in {argv[1]}")
        fetch(entries[argv[2]], Path(argv[3]))
    except Refused as e:
        print(f"image-build: refused: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
