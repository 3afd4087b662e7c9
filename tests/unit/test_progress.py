"""The progress display and the log handler: a rich bar on a terminal that log lines print
above, never into; nothing drawn off a terminal or with JSON logs."""

from __future__ import annotations

import io
import logging
import re
import threading

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


def drawn(out, progress) -> str:
    """The line as last drawn."""
    progress._bars.refresh()
    return screen(out.getvalue())[-1]


def test_the_line_shows_stream_k_of_n_count_of_total_rate_and_time_left():
    out = io.StringIO()
    progress = Progress(Console(file=out, force_terminal=True, width=140))
    progress.start("b24/deals", "3/10", "deals", requests=lambda: 7)
    progress.expect(2000)
    progress.add(500)
    line = drawn(out, progress)
    assert re.match(r"^\S b24 3/10 deals ", line), line  # the spinner, then where the sync is
    assert "500 of ~2,000 deals · " in line and "/s · " in line, line
    assert re.search(r" · (\d+:\d\d|-:--) left · \d+:\d\d in all$", line), line
    assert "requests" not in line  # the total says how far it is
    progress.stop()


def test_one_line_follows_the_sync_across_streams():
    out = io.StringIO()
    progress = Progress(Console(file=out, force_terminal=True, width=140))
    progress.start("amo/deals", "5/10", "deals")
    progress.add(1234)
    progress.finish()
    progress.start("amo/calls", "6/10", "calls")
    line = drawn(out, progress)
    assert re.match(r"^\S amo 6/10 calls ", line) and "deals" not in line, line
    assert len(progress._bars.tasks) == 1  # one line, not one bar per stream
    progress.stop()


def test_a_stream_without_a_total_shows_pages_and_requests_not_a_zero_rate():
    """A stream that reads pages before finding anything (calls filtered out, say) still moves."""
    out = io.StringIO()
    made = [40]  # requests the adapter had made before the stream
    progress = Progress(Console(file=out, force_terminal=True, width=140))
    progress.start("amo/calls", "4/10", "calls", requests=lambda: made[0])
    for _ in range(12):
        made[0] += 3
        progress.add(0)
    line = drawn(out, progress)
    assert "0 calls · 12 pages · 36 requests · " in line, line
    assert "/s" not in line and "left" not in line, line
    progress.add(50)
    assert "50 calls · " in drawn(out, progress) and "/s" in drawn(out, progress)
    progress.stop()


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


def test_streams_side_by_side_share_the_line_each_thread_its_own():
    out = io.StringIO()
    progress = Progress(Console(file=out, force_terminal=True, width=200))
    go = threading.Event()

    def stream(label, step, unit, total, pages, ready):
        progress.start(label, step, unit)
        if total:
            progress.expect(total)
        for n in pages:
            progress.add(n)
        ready.set()
        go.wait()
        progress.finish()

    threads = []
    for args in (
        ("amo/deals", "3/10", "deals", 2000, [250, 250]),
        ("amo/calls", "4/10", "calls", None, [0, 0, 0]),
    ):
        ready = threading.Event()
        threads.append(threading.Thread(target=stream, args=(*args, ready)))
        threads[-1].start()
        ready.wait()  # one after the other: the line lists them in the order they started
    line = drawn(out, progress)
    assert re.match(r"^\S amo 3,4/10 ", line), line
    assert "deals 500 of ~2,000 deals · " in line and " | calls 0 calls · 3 pages · " in line, line
    go.set()
    for t in threads:
        t.join()
    assert progress.under_way() == [] and progress.text() == ""
    progress.stop()


def test_one_page_one_request():
    out = io.StringIO()
    progress = Progress(Console(file=out, force_terminal=True, width=140))
    made = [5]
    progress.start("amo/users", "1/10", "users", requests=lambda: made[0])
    made[0] += 1
    progress.add(0)
    assert "0 users · 1 page · 1 request · " in drawn(out, progress)
    progress.stop()
