"""A last line of defence for secrets in the log: whatever a record says (a library's message quoting a
header, a traceback showing a URL), bearer tokens and `token=` values are replaced before it is written.
The code never logs a token on purpose; this catches what other libraries might."""

from __future__ import annotations

import logging
import re
from typing import Final

REDACTED: Final = "<redacted>"
_SECRETS: Final = (
    re.compile(r"(?i)(\bbearer\s+)[^\s\"',;\\]+"),
    re.compile(r"(?i)(\b(?:access_|api_)?token=)[^&\s\"',;\\]+"),
    re.compile(r"(?i)(\bauthorization:\s*)(?!bearer\b)[^\s\"',;\\]+"),
)


def redact(text: str) -> str:
    for pattern in _SECRETS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


class RedactSecrets(logging.Filter):
    """Rewrites each record's message (and traceback) with secrets redacted; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True
