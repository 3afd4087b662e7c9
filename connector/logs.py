"""Logging set-up: readable lines by default, JSON lines on request; secrets always masked.

On a terminal (text format), lines go through rich's handler on a console that the sync
progress display shares (`console()`), so a log line never breaks the progress bar. Off a
terminal, and always for JSON, lines are plain writes to stderr, one record per line.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from rich.console import Console
from rich.logging import RichHandler

from adapters.redact import RedactingFilter, redact
from adapters.times import FORMAT

_console: Console | None = None  # the terminal console, when log lines are drawn on one


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime(FORMAT, time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False, default=str)


def console() -> Console | None:
    """The console log lines are drawn on (a terminal, text format), else None: then nothing
    may draw on stderr but plain log lines."""
    return _console


def setup(fmt: str = "text", verbose: bool = False) -> None:
    global _console
    _console = Console(stderr=True) if fmt == "text" and sys.stderr.isatty() else None
    handler = _terminal_handler(_console) if _console is not None else logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    if _console is None:
        handler.setFormatter(
            JsonFormatter()
            if fmt == "json"
            else logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("urllib3", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _terminal_handler(out: Console) -> logging.Handler:
    """rich's handler: time, level, message; no markup read from messages, no source paths."""
    handler = RichHandler(
        console=out,
        show_path=False,
        markup=False,
        rich_tracebacks=False,
        log_time_format="%H:%M:%S",
        keywords=[],
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler
