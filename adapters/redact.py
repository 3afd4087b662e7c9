"""Keep secrets out of logs, messages and tables.

Config loading registers every secret value (tokens, client secrets, webhook URLs and their
secret path part); `redact(text)` masks them, and `RedactingFilter` does it for every log record.
"""

from __future__ import annotations

import logging
import threading

_secrets: set[str] = set()
_lock = threading.Lock()
MASK = "***"


def register(value: str | None) -> None:
    """Remember a secret so it is masked wherever it shows up. Short values are ignored."""
    if value and len(value) >= 6:
        with _lock:
            _secrets.add(value)


def redact(text: object) -> str:
    out = str(text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)  # longest first: a URL before its token
    for s in secrets:
        if s in out:
            out = out.replace(s, MASK)
    return out


class RedactingFilter(logging.Filter):
    """Masks secrets in the fully formatted message of every record passing through."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True
