"""A one-line-per-stream progress display (rows, rows/s) that stays quiet off a terminal."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, stream=None, enabled: bool | None = None, min_interval: float = 0.2):
        self.out = stream or sys.stderr
        self.enabled = self.out.isatty() if enabled is None else enabled
        self.min_interval = min_interval
        self._label, self._rows, self._t0, self._last = "", 0, 0.0, 0.0

    def start(self, label: str) -> None:
        self._label, self._rows = label, 0
        self._t0 = self._last = time.monotonic()
        self._draw()

    def add(self, rows: int) -> None:
        self._rows += rows
        now = time.monotonic()
        if now - self._last >= self.min_interval:
            self._last = now
            self._draw()

    def finish(self, status: str) -> None:
        self._draw(end=f"  {status}\n")

    def _draw(self, end: str = "") -> None:
        if not self.enabled:
            return
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        rate = self._rows / elapsed if self._rows else 0.0
        self.out.write(f"\r\x1b[K  {self._label}: {self._rows:,} rows  {rate:,.0f} rows/s{end}")
        self.out.flush()
