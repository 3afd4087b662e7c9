"""The sync progress display: stream k of n, entities read (of the total when the CRM gives
one), rate and time left, drawn by rich on a terminal.

The display shares its console with the log handler (`connector.logs.console`), so a log line
is printed above the bar instead of breaking it. Off a terminal (CI, cron, the daemon) or with
`--log-format json` there is no display at all: the sync's one log line per stream end is the
record. A stream's bar goes away when the stream ends; that log line is its one summary.
Streams run side by side each have their bar: a thread's calls update its own stream's bar.
"""

from __future__ import annotations

import threading

from rich.console import Console
from rich.progress import BarColumn, ProgressColumn, TextColumn
from rich.progress import Progress as RichProgress
from rich.table import Column
from rich.text import Text

from connector import logs


class Count(ProgressColumn):
    """`1,234 of ~2,000 deals`, or `1,234 deals` when no total is known."""

    def __init__(self):
        super().__init__(table_column=Column(no_wrap=True))

    def render(self, task) -> Text:
        unit = task.fields.get("unit", "rows")
        if task.total is None:
            return Text(f"{task.completed:,.0f} {unit}")
        return Text(f"{task.completed:,.0f} of ~{task.total:,.0f} {unit}")


class Rate(ProgressColumn):
    """Entities per second over rich's recent window."""

    def render(self, task) -> Text:
        return Text(f"{task.speed or 0:,.0f}/s")


class Time(ProgressColumn):
    """`0:12 left` when a total is known (rich's estimate), else `0:05 elapsed`."""

    def render(self, task) -> Text:
        if task.total is not None:  # no rate measured yet: no estimate either
            left = task.time_remaining
            return Text(f"{'-:--' if left is None else _clock(left)} left")
        return Text(f"{_clock(task.elapsed or 0)} elapsed")


def _clock(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{s:02d}" if minutes >= 60 else f"{minutes}:{s:02d}"


class Progress:
    """One bar per stream under way; a no-op when there is no terminal console to draw on."""

    def __init__(self, console: Console | None = None, enabled: bool | None = None):
        self.console = console or logs.console()
        self.enabled = self.console is not None if enabled is None else enabled and self.console is not None
        self._bars: RichProgress | None = None
        self._lock = threading.Lock()
        self._local = threading.local()  # the calling thread's stream: its bar and total

    @property
    def _task(self):
        return getattr(self._local, "task", None)

    @_task.setter
    def _task(self, task) -> None:
        self._local.task = task

    @property
    def _total(self) -> int:
        return getattr(self._local, "total", 0)

    @_total.setter
    def _total(self, total: int) -> None:
        self._local.total = total

    def start(self, label: str, step: str = "", unit: str = "rows") -> None:
        """A new bar: `label` (source/stream), `step` (`3/10`), `unit` (what is counted)."""
        if not self.enabled:
            return
        with self._lock:
            self._task, self._total = self._bar(label, step, unit), 0

    def _bar(self, label: str, step: str, unit: str):
        """A task on the (shared) bars, started with the first one; call under the lock."""
        if self._bars is None:
            self._bars = RichProgress(
                TextColumn("stream {task.fields[step]}"),
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=20),
                Count(),
                Rate(),
                Time(),
                console=self.console,
                transient=True,
            )
            self._bars.start()
        return self._bars.add_task(label, total=None, step=step, unit=unit)

    def expect(self, entities: int) -> None:
        """The CRM announced about this many more entities for the stream under way."""
        if self._task is not None:
            self._total += entities
            self._bars.update(self._task, total=self._total)

    def add(self, entities: int) -> None:
        if self._task is not None:
            self._bars.advance(self._task, entities)

    def finish(self) -> None:
        """The stream ended: its bar goes (its log line says how it ended)."""
        if self._task is not None:
            self._bars.remove_task(self._task)
            self._task = None

    def stop(self) -> None:
        """No stream under way: give the terminal back (safe to call twice)."""
        self.finish()
        with self._lock:
            if self._bars is not None:
                self._bars.stop()
                self._bars = None
