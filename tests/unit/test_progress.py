"""The progress display and the log handler: a rich bar on a terminal that log lines print
above, never into; nothing drawn off a terminal or with JSON logs."""

from __future__ import annotations

import io
import logging
import re

import pytest
from rich.console import Console

from adapters.redact import register as register_secret
from connector import logs
from connector.run.progress import Progress

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def terminal(monkeypatch):
    """Makes stderr a terminal (call it in the test: pytest swaps stderr between phases)."""

    def make():
        out = Terminal()
        monkeypatch.setattr("sys.stderr", out)
        monkeypatch.setenv("COLUMNS", "120")
        return out

    yield make
    logs.setup("text")  # back to a handler on the real stderr


def screen(text: str) -> list[str]:
    """What the terminal shows, line by line, escape codes removed."""
    return [line.rstrip() for line in ANSI.sub("", text).replace("\r", "\n").splitlines() if line.strip()]


def test_bar_shows_stream_k_of_n_count_of_total_rate_and_time_left():
    out = io.StringIO()
    progress = Progress(Console(file=out, force_terminal=True, width=120))
    progress.start("b24/deals", "3/10", "deals")
    progress.expect(2000)
    progress.add(500)
    progress._bars.refresh()
    line = [line for line in screen(out.getvalue()) if "b24/deals" in line][-1]
    assert line.startswith("stream 3/10 b24/deals")
    assert "500 of ~2,000 deals" in line and "/s" in line and re.search(r" (\d+:\d\d|-:--) left$", line), line
    progress.stop()


def test_streams_side_by_side_each_have_their_own_bar():
    """Each thread's calls go to its own stream's bar: two streams at once show two lines,
    each with its own count and total; one ending leaves the other's bar."""
    import threading

    out = io.StringIO()
    progress = Progress(Console(file=out, force_terminal=True, width=120))
    started, counted, go = threading.Barrier(2), threading.Barrier(3), threading.Barrier(3)

    def stream(label, step, total, added, finish):
        progress.start(label, step, "deals")
        started.wait(5)  # both bars up before either counts
        progress.expect(total)
        progress.add(added)
        counted.wait(5)
        go.wait(5)
        if finish:
            progress.finish()

    a = threading.Thread(target=stream, args=("b24/deals", "6/11", 2000, 500, False))
    b = threading.Thread(target=stream, args=("b24/calls", "8/11", 9000, 7000, True))
    for t in (a, b):
        t.start()
    counted.wait(5)
    progress._bars.refresh()
    go.wait(5)
    for t in (a, b):
        t.join()
    lines = screen(out.getvalue())
    deals = [line for line in lines if "b24/deals" in line][-1]
    calls = [line for line in lines if "b24/calls" in line][-1]
    assert deals.startswith("stream 6/11 b24/deals") and "500 of ~2,000 deals" in deals
    assert calls.startswith("stream 8/11 b24/calls") and "7,000 of ~9,000 deals" in calls
    assert [t.description for t in progress._bars.tasks] == ["b24/deals"]  # calls ended, deals goes on
    progress.stop()


def test_without_a_total_the_bar_shows_the_count():
    out = io.StringIO()
    progress = Progress(Console(file=out, force_terminal=True, width=120))
    progress.start("amo/deals", "5/10", "deals")
    progress.add(1234)
    progress._bars.refresh()
    progress.stop()
    line = [line for line in screen(out.getvalue()) if "amo/deals" in line][-1]
    assert "1,234 deals" in line and " of " not in line and "left" not in line
    assert re.search(r" \d+:\d\d elapsed$", line), line


def test_log_lines_print_above_the_bar_not_into_it(terminal):
    out = terminal()
    logs.setup("text")
    progress = Progress()
    assert progress.enabled and progress.console is logs.console()
    progress.start("amo/deals", "1/2", "deals")
    progress.add(10)
    logging.getLogger("crm_connector.sync").info("sync source=amo stream=deals rows=10 status=ok")
    progress.stop()
    lines = screen(out.getvalue())
    said = [line for line in lines if "rows=10" in line]
    assert len(said) == 1 and "stream 1/2" not in said[0] and "INFO" in said[0]


def test_secrets_are_masked_on_the_terminal_too(terminal):
    out = terminal()
    logs.setup("text")
    register_secret("abcdefsecret123")
    logging.getLogger("x").warning("GET https://h/rest/1/abcdefsecret123/crm.deal.list failed")
    assert logs.console() is not None and "crm.deal.list failed" in ANSI.sub("", out.getvalue())
    assert "abcdefsecret123" not in out.getvalue()


@pytest.mark.parametrize("fmt, tty", [("text", False), ("json", True)])
def test_no_bar_off_a_terminal_or_with_json_logs(monkeypatch, fmt, tty):
    out = Terminal() if tty else io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    try:
        logs.setup(fmt)
        assert logs.console() is None
        progress = Progress()
        assert not progress.enabled
        progress.start("amo/deals", "1/2", "deals")
        progress.add(10)
        logging.getLogger("crm_connector.sync").info("sync source=amo stream=deals rows=10 status=ok")
        progress.stop()
        lines = out.getvalue().splitlines()
        assert len(lines) == 1 and "\x1b" not in out.getvalue()
        if fmt == "json":
            assert lines and lines[0].startswith("{")
    finally:
        logs.setup("text")
