"""Open a report in headless Chromium (the OS package, started here) and read what it drew.

`open_page` runs Chromium twice on a fresh profile with networking off: once `--dump-dom` (the
DOM after the page's script ran) with console messages logged to stderr, once `--screenshot`.
`page_numbers` lists every number cell with the `metrics` key it claims to show.
"""

from __future__ import annotations

import html
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
    from connector.report.text import words

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
        assert text == fmt(want, language) or (want is None and text == words(language)["no_clients"]), (
            key,
            text,
        )
    return page


# Measures the laid-out page for `layout`: its width, boxes that stick out of the screen (a
# table's own scroll box may hold a wider table), axis labels that touch on screen, chart texts
# cut off by their chart's edge and the smallest chart text as drawn.
LAYOUT_SCRIPT = """
window.addEventListener('load', function () {
  var vw = document.documentElement.clientWidth, out = {
    viewport: vw, scrollWidth: document.documentElement.scrollWidth, wide: [], overlaps: [],
    cut: [], minFont: 99, charts: 0};
  document.querySelectorAll('body *').forEach(function (el) {
    var r = el.getBoundingClientRect();
    var inBox = el.parentElement && el.parentElement.closest('.table');
    if (!inBox && r.width > 0 && (r.right > vw + 0.5 || r.left < -0.5)) {
      out.wide.push(el.tagName.toLowerCase() + '.' + (el.getAttribute('class') || '') + ' ' + Math.round(r.right));
    }
  });
  function shown(t) { return t.getAttribute('opacity') !== '0' && getComputedStyle(t).opacity !== '0'; }
  document.querySelectorAll('g.role-axis-label').forEach(function (g) {
    var ts = Array.prototype.filter.call(g.querySelectorAll('text'), shown).map(function (t) {
      return [t.textContent, t.getBoundingClientRect()]; });
    for (var i = 0; i < ts.length; i++) for (var j = i + 1; j < ts.length; j++) {
      var a = ts[i][1], b = ts[j][1], gap = 1;
      if (a.left < b.right + gap && b.left < a.right + gap && a.top < b.bottom + gap && b.top < a.bottom + gap) {
        out.overlaps.push(ts[i][0] + ' | ' + ts[j][0]); }
    }
  });
  document.querySelectorAll('figure.chart svg').forEach(function (svg) {
    out.charts += 1;
    var s = svg.getBoundingClientRect(), scale = s.width / svg.viewBox.baseVal.width;
    svg.querySelectorAll('text').forEach(function (t) {
      if (!shown(t) || !t.textContent) return;
      var r = t.getBoundingClientRect();
      if (r.left < s.left - 1 || r.right > s.right + 1 || r.top < s.top - 1 || r.bottom > s.bottom + 1) {
        out.cut.push(t.textContent); }
      out.minFont = Math.min(out.minFont, parseFloat(t.getAttribute('font-size')) * scale);
    });
  });
  var pre = document.createElement('pre');
  pre.id = 'layout';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
  if (window.parent !== window) { window.parent.postMessage(pre.textContent, '*'); }
});
"""


def layout(html_file: Path, width: int, shot_name: str, height: int = 4000) -> dict:
    """What LAYOUT_SCRIPT measured with the page `width` px wide, and a screenshot of its top
    `height` px in tests/artifacts.

    Headless Chromium will not make a window narrower than 500 px, so the page is shown in an
    iframe of the wanted width (scrollbars hidden, as on a phone); the frame posts the figures to
    the wrapper page, whose DOM Chromium dumps."""
    import json

    framed = html_file.read_text(encoding="utf-8").replace(
        "</body>",
        "<style>html{scrollbar-width:none}::-webkit-scrollbar{display:none}</style>"
        f"<script>{LAYOUT_SCRIPT}</script></body>",
    )
    wrapper = html_file.with_name(html_file.stem + f"-at-{width}.html")
    wrapper.write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"></head><body style="margin:0">'
        f'<iframe style="border:0;display:block;width:{width}px;height:{height}px" '
        f'srcdoc="{html.escape(framed, quote=True)}"></iframe><script>'
        "window.addEventListener('message', function (e) { var p = document.createElement('pre');"
        " p.id = 'layout'; p.textContent = e.data; document.body.appendChild(p); });"
        "</script></body></html>",
        encoding="utf-8",
    )
    url = wrapper.resolve().as_uri()
    size = f"--window-size={max(width, 500)},{height}"
    dump = _run([size, "--hide-scrollbars", "--virtual-time-budget=3000", "--dump-dom", url])
    assert dump.returncode == 0, dump.stderr[-2000:]
    m = re.search(r'<pre id="layout">(.*?)</pre>', dump.stdout, re.S)
    assert m, dump.stdout[-2000:]
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / shot_name
    snap = _run([f"--screenshot={shot}", size, "--hide-scrollbars", "--virtual-time-budget=3000", url])
    assert snap.returncode == 0 and shot.exists(), snap.stderr[-2000:]
    print(f"screenshot: {shot}")
    return json.loads(html.unescape(m.group(1)))
