"""Open a report in headless Chromium (the OS package, started here) and read what it drew.

`open_page` runs Chromium twice on a fresh profile with networking off: once `--dump-dom` (the
DOM after the page's script ran) with console messages logged to stderr, once `--screenshot`.
`page_numbers` lists every number cell with the `metrics` key it claims to show.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).parent / "artifacts"


def chromium() -> str:
    """The browser's path; .ci/run installs the package when missing."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Chromium is not installed: apt-get install -y chromium (.ci/run does it)"
    return path


@dataclass
class Page:
    dom: str
    console: list[str]  # console messages Chromium logged (errors included)
    screenshot: Path


def _run(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def open_page(html_file: Path, shot_name: str, width: int = 1200, height: int = 4000) -> Page:
    url = html_file.resolve().as_uri()
    dump = _run(["--enable-logging=stderr", "--v=0", "--virtual-time-budget=2000", "--dump-dom", url])
    assert dump.returncode == 0, dump.stderr[-2000:]
    console = [line for line in dump.stderr.splitlines() if ":CONSOLE(" in line or "Uncaught" in line]
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / shot_name
    snap = _run([f"--screenshot={shot}", f"--window-size={width},{height}", "--hide-scrollbars", url])
    assert snap.returncode == 0 and shot.exists() and shot.stat().st_size > 10_000, snap.stderr[-2000:]
    print(f"screenshot: {shot}")
    return Page(dump.stdout, console, shot)


class _Cells(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells, self._open = [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "td" and "data-measure" in a:
            self._open = [a, ""]

    def handle_data(self, data):
        if self._open is not None:
            self._open[1] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._open is not None:
            self.cells.append(tuple(self._open))
            self._open = None


def page_numbers(dom: str) -> list[tuple[tuple[str, str, str, str], float | None, str]]:
    """(metrics key, the value it carries, the text shown) for every number cell."""
    p = _Cells()
    p.feed(dom)
    out = []
    for a, text in p.cells:
        key = (a["data-measure"], a["data-period"], a["data-dimension"], a["data-dimension-value"])
        out.append((key, None if a["data-value"] == "null" else float(a["data-value"]), text))
    return out


def body_attr(dom: str, name: str) -> str | None:
    m = re.search(rf'<body[^>]*\s{name}="([^"]*)"', dom)
    return m.group(1) if m else None


def check_report(html_file: Path, metrics: dict, shot_name: str, language: str = "en") -> Page:
    """The page opened in Chromium: no console errors, every chart drawn, every number cell equal
    to its `metrics` row (key -> value) and shown as the report formats it."""
    from connector.report.charts import fmt

    page = open_page(html_file, shot_name)
    assert page.console == [], page.console
    charts, drawn = body_attr(page.dom, "data-charts"), body_attr(page.dom, "data-charts-drawn")
    assert charts is not None and int(charts) > 0 and drawn == charts, (charts, drawn)
    cells = page_numbers(page.dom)
    assert cells
    for key, value, text in cells:
        assert key in metrics or value is None, key  # an empty cell may have no row
        want = metrics.get(key)
        assert value == want, (key, value, want)
        assert text == fmt(want, language), (key, text)
    return page
