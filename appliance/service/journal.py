"""Where the daemon's log records go: journald's native protocol under systemd, plain stderr elsewhere.

systemd sets JOURNAL_STREAM to the device:inode of the stream it connected to the journal; when that is
our stderr we are logging to journald. With systemd-python, `JournalHandler` then sends each record with
its priority and source fields (`journalctl -u appliance -p warning` works, tracebacks stay one entry).
Without it, records get the `<N>` priority prefix journald reads on stderr lines (sd-daemon(3)). Off
systemd, records get a timestamp, since no journal adds one.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Final, TextIO

SYSLOG_IDENTIFIER: Final = "appliance"
PLAIN_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT: Final = "%(name)s: %(message)s"


class PriorityPrefixFormatter(logging.Formatter):
    """Prefixes each record with its syslog priority, e.g. '<4>' for a warning."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{syslog_priority(record.levelno)}>{super().format(record)}"


def syslog_priority(levelno: int) -> int:
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def stderr_is_journal(environ: Mapping[str, str] | None = None, stream: TextIO | None = None) -> bool:
    env = os.environ if environ is None else environ
    expected = env.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def log_handler(environ: Mapping[str, str] | None = None, stream: TextIO | None = None) -> logging.Handler:
    """The handler for the daemon's root logger (the daemon calls this once, at start-up)."""
    if stderr_is_journal(environ, stream):
        try:
            from systemd.journal import JournalHandler
        except ImportError:
            handler: logging.Handler = logging.StreamHandler(stream or sys.stderr)
            handler.setFormatter(PriorityPrefixFormatter(JOURNAL_FORMAT))
            return handler
        handler = JournalHandler(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)
        handler.setFormatter(logging.Formatter(JOURNAL_FORMAT))
        return handler
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    return handler
