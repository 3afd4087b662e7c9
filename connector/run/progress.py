"""The sync progress display: one line for the whole sync, drawn by rich on a terminal.

    ⠹ amo 3/10 deals ━━━━━━━━━━━━━━━━━━━━━━━━ 1,234 of ~2,000 deals · 95/s · 0:08 left · 0:42 in all
    ⠼ amo 4/10 calls ━━━━━━━━━━━━━━━━━━━━━━━━ 0 calls · 12 pages · 37 requests · 0:40 in all

The line follows the sync across its streams: which stream of how many, its entities (of the
total when the CRM gives one, with the rate and the time left), else the pages and requests
done so far, so a stream that reads for a while before finding anything still shows it moves
(and a rate is only shown once there is one). The spinner turns while anything happens.
Streams run side by side (each in its thread) share the line, one part each
(`amo 3,4/10 deals 1,234 of ~2,000 deals · … | calls 0 calls · 12 pages · …`): a thread's calls
update its own stream.

The display shares its console with the log handler (`connector.logs.console`), so a log line
is printed above the line instead of breaking it. Off a terminal (CI, cron, the daemon) or with
`--log-format json` there is no display at all: the sync's one log line per stream end is the
record. The line goes away when the sync ends.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, ProgressColumn, SpinnerColumn
from rich.progress import Progress as RichProgress
from rich.table import Column
from rich.text import Text

from connector import logs


@dataclass
class Stream:
    """What the line says about the stream under way."""

    label: str  # source/stream
    step: str  # `3/10`
    unit: str
    requests: Callable[[], int] | None = None  # the adapter's request counter
    done: int = 0
    total: int | None = None
    pages: int = 0
    started: float = field(default_factory=time.monotonic)
    requests_before: int = 0

    def requests_made(self) -> int | None:
        return None if self.requests is None else max(0, self.requests() - self.requests_before)

    def left(self) -> float | None:
        """Seconds to the end of the stream at its rate so far, once there is a rate and a total."""
        spent = time.monotonic() - self.started
        if self.total is None or self.done <= 0 or spent <= 0:
            return None
        return max(0.0, (self.total - self.done) / (self.done / spent))

    def describe(self) -> str:
        """`1,234 of ~2,000 deals · 95/s · 0:08 left`, or `0 calls · 12 pages · 37 requests`."""
        spent = time.monotonic() - self.started
        parts = [
            f"{self.done:,} of ~{self.total:,} {self.unit}" if self.total else f"{self.done:,} {self.unit}"
        ]
        if self.done and spent > 0:
            parts.append(f"{self.done / spent:,.0f}/s")
        if self.total:
            left = self.left()
            parts.append(f"{'-:--' if left is None else _clock(left)} left")
        else:  # no total: show that the stream moves even while it finds nothing
            parts.append(_count(self.pages, "page"))
            made = self.requests_made()
            if made is not None:
                parts.append(_count(made, "request"))
        return " · ".join(parts)


class Line(ProgressColumn):
    """The sync's one line of text, from the display's state."""

    def __init__(self, progress: Progress):
        super().__init__(table_column=Column(no_wrap=True))
        self.progress = progress

    def render(self, task) -> Text:
        return Text(self.progress.text())


class Title(ProgressColumn):
    """`amo 3/10 deals`: the source, the stream's place among the sync's streams, its name."""

    def __init__(self, progress: Progress):
        super().__init__(table_column=Column(no_wrap=True))
        self.progress = progress

    def render(self, task) -> Text:
        under_way = self.progress.under_way()
        if not under_way:
            return Text("")
        source, _, name = under_way[0].label.partition("/")
        if len(under_way) == 1:  # the stream's name here; several streams each name theirs after
            return Text.assemble((source, "bold"), f" {under_way[0].step} ", (name or source, "bold"))
        n = under_way[0].step.partition("/")[2]
        steps = ",".join(s.step.partition("/")[0] for s in under_way) + (f"/{n}" if n else "")
        return Text.assemble((source, "bold"), f" {steps}")


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _clock(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{s:02d}" if minutes >= 60 else f"{minutes}:{s:02d}"


class Progress:
    """One line for the sync under way; a no-op when there is no terminal console to draw on."""

    def __init__(self, console: Console | None = None, enabled: bool | None = None):
        self.console = console or logs.console()
        self.enabled = self.console is not None if enabled is None else enabled and self.console is not None
        self._bars: RichProgress | None = None
        self._task = None
        self._lock = threading.Lock()  # the streams' state
        self._live = threading.Lock()  # starting and stopping the display
        self._streams: dict[int, Stream] = {}  # the streams under way, by the thread reading each
        self.started: float | None = None

    @property
    def stream(self) -> Stream | None:
        """The calling thread's stream under way."""
        return self._streams.get(threading.get_ident())

    def under_way(self) -> list[Stream]:
        """Every stream under way, in the order they started."""
        with self._lock:
            return list(self._streams.values())

    def start(
        self, label: str, step: str = "", unit: str = "rows", requests: Callable[[], int] | None = None
    ) -> None:
        """The next stream: `label` (source/stream), `step` (`3/10`), `unit` (what is counted),
        `requests` (the adapter's request counter, read as the line is drawn)."""
        if not self.enabled:
            return
        before = requests() if requests is not None else 0
        with self._lock:
            self._streams[threading.get_ident()] = Stream(label, step, unit, requests, requests_before=before)
        with self._live:
            if self._bars is None:
                self.started = time.monotonic()
                self._bars = RichProgress(
                    SpinnerColumn(),
                    Title(self),
                    BarColumn(bar_width=24),
                    Line(self),
                    console=self.console,
                    transient=True,
                )
                self._task = self._bars.add_task("sync", total=None)
                self._bars.start()
        self._draw()

    def _draw(self) -> None:
        """The bar: every stream's entities of their totals (none while a stream has none).
        Rich is called with our lock released: its refresh thread takes its own lock, then ours."""
        with self._lock:
            streams = list(self._streams.values())
            totals = [s.total for s in streams]
            total = None if not streams or None in totals else sum(totals)
            done = sum(s.done for s in streams)
        bars = self._bars
        if bars is not None:
            bars.update(self._task, total=total, completed=done)

    def expect(self, entities: int) -> None:
        """The CRM announced about this many more entities for the calling thread's stream."""
        s = self.stream
        if s is not None:
            with self._lock:
                s.total = (s.total or 0) + entities
            self._draw()

    def add(self, entities: int) -> None:
        """A page of the calling thread's stream saved with this many entities."""
        s = self.stream
        if s is not None:
            with self._lock:
                s.done += entities
                s.pages += 1
            self._draw()

    def text(self) -> str:
        """The line's words after the bar (see the module docstring)."""
        under_way = self.under_way()
        if not under_way:
            return ""
        spent = time.monotonic() - (self.started or time.monotonic())
        if len(under_way) == 1:
            return f"{under_way[0].describe()} · {_clock(spent)} in all"
        parts = [f"{s.label.partition('/')[2] or s.label} {s.describe()}" for s in under_way]
        return f"{' | '.join(parts)} · {_clock(spent)} in all"

    def finish(self) -> None:
        """The calling thread's stream ended (its log line says how); the line goes on."""
        with self._lock:
            self._streams.pop(threading.get_ident(), None)

    def stop(self) -> None:
        """No stream under way: give the terminal back (safe to call twice)."""
        with self._lock:
            self._streams.clear()
        with self._live:
            if self._bars is not None:
                self._bars.stop()
                self._bars = None
