"""rknn-toolkit2 writes its errors from native code straight to file descriptors 1 and 2, whatever Python's
sys.stdout is; so the log is captured at the descriptor level, into a file (a failing build logs ~10^5 lines)."""

from __future__ import annotations

import ctypes
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_ERROR_LINE = re.compile(r"^(?:\x1b\[[0-9;]*m)?E\b")
# Logged for every Reshape the compiler leaves on the CPU; the build is fine (checked in the simulator).
_HARMLESS = ("Unkown op target", "Unknown op target")
REGTASK = "REGTASK: The bit width of field value exceeds the limit"


@dataclass(frozen=True)
class LogVerdict:
    errors: int
    regtask_errors: int
    first_errors: tuple[str, ...]

    @property
    def clean(self) -> bool:
        return self.errors == 0


@contextmanager
def captured_fds(log_path: Path) -> Iterator[None]:
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    target = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        ctypes.CDLL(None).fflush(None)  # native buffers, before the descriptors go back
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            os.close(fd)


def read_verdict(log_path: Path, since_byte: int = 0) -> LogVerdict:
    errors = regtask = 0
    first: list[str] = []
    with log_path.open("rb") as f:
        f.seek(since_byte)
        for raw in f:
            line = raw.decode("utf-8", "replace").rstrip()
            if not _ERROR_LINE.match(line) or any(h in line for h in _HARMLESS):
                continue
            errors += 1
            regtask += REGTASK in line
            if len(first) < 5:
                first.append(line)
    return LogVerdict(errors, regtask, tuple(first))
