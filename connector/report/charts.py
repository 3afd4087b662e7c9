"""The report page: Vega-Lite charts rendered to inline SVG, tables, and the HTML around them.

Charts are Vega-Lite specs rendered by vl-convert (Vega's own renderer, run offline inside the
Python wheel): the page holds plain SVG, no script and no font or library to fetch, so it opens
offline and survives being mailed. Every number in a table cell carries the `metrics` row it
shows (`data-measure`, `data-period`, `data-dimension`, `data-dimension-value`, `data-value`);
chart labels are the same formatted texts.

The page fits a phone (390 px) as well as a desktop: charts are drawn narrow and scale with
their `viewBox` to the width they get, wide tables scroll inside their own box.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

import vl_convert

from connector.report.formats import fmt

__all__ = ["Num", "Section", "fmt", "hbar", "bars_and_line", "lines", "channel_bars", "svg", "page"]

SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
COLORS = ("#4C78A8", "#F58518", "#54A24B", "#E45756")
FONT = "DejaVu Sans, Arial, sans-serif"
PLOT = 260  # plot width in px: with its labels a chart is ~400 px, so a phone shrinks it little
GROW = 1.2  # how far a chart may grow past its drawn size on a wide screen


@dataclass(frozen=True)
class Num:
    """A table cell showing one `metrics` row's value."""

    key: tuple[str, str, str, str]  # measure, period, dimension, dimension_value
    value: float | None
    empty: str = "—"  # shown when the value is empty, e.g. "no clients" for a CAC


@dataclass
class Section:
    title: str
    formula: str
    chart: dict | None = None  # a Vega-Lite spec (data inline), None: no data
    head: list[str] = field(default_factory=list)
    rows: list[list] = field(default_factory=list)  # cells: str or Num
    note: str = ""  # shown instead of the chart when there is none
    table_note: str = ""  # defines the table's columns the chart does not show; above the table


# -- charts -------------------------------------------------------------------------------------

# Quantitative axes get few ticks (a plot is only PLOT px wide) and Vega drops any label that
# would still touch its neighbour; `svg` then removes the dropped labels from the drawing.
VALUE_AXIS = {"tickCount": 4, "labelOverlap": "parity", "labelSeparation": 6}


def _spec(data: list[dict], body: dict, width: int | None = PLOT, height: int | None = None) -> dict:
    spec = {
        "$schema": SCHEMA,
        "data": {"values": data},
        "config": {
            "font": FONT,
            "view": {"stroke": None},
            "axis": {"labelLimit": 120, "labelFontSize": 12, "titleFontSize": 12},
            "legend": {"labelFontSize": 12, "labelLimit": 260},
            "text": {"fontSize": 12},
        },
        **body,
    }
    if width:
        spec["width"] = width
    if height:
        spec["height"] = height
    return spec


def _value(field_: str, title: str, **axis) -> dict:
    return {"field": field_, "type": "quantitative", "title": title, "axis": {**VALUE_AXIS, **axis}}


def _across(values: list[float]) -> dict:
    """Axis settings for values along the x axis: as many ticks as labels of their length fit
    side by side in PLOT px (at 12 px a digit is about 7.6 px wide, a separator 3.8)."""
    top = f"{max((abs(v) for v in values), default=0):,.0f}"
    width = 7.6 * sum(c.isdigit() for c in top) + 3.8 * top.count(",")
    return {"tickCount": max(2, min(4, int(PLOT // (width + 16))))}  # 4: enough for a bar's size


def _months(field_: str) -> dict:
    return {"field": field_, "type": "ordinal", "title": None, "sort": None, "axis": {"labelAngle": -90}}


def _hbar_panel(data: list[dict], label: str, value: str, text: str, title: str, color: str) -> dict:
    return {
        "height": max(60, 24 * len(data)),
        "encoding": {
            "y": {"field": label, "type": "nominal", "sort": None, "title": None},
            "x": _value(value, title, **_across([d[value] for d in data])),
        },
        "layer": [
            {"mark": {"type": "bar", "color": color}},
            {"mark": {"type": "text", "align": "left", "dx": 4}, "encoding": {"text": {"field": text}}},
        ],
    }


def hbar(data: list[dict], label: str, value: str, text: str, title: str, color: str = COLORS[0]) -> dict:
    """Horizontal bars in the data's order, each with its formatted value beside it."""
    return _spec(data, _hbar_panel(data, label, value, text, title, color))


def bars_and_line(data: list[dict], x: str, bar: str, line: str, bar_title: str, line_title: str) -> dict:
    """Monthly bars (left axis) with a line over them (right axis)."""
    return _spec(
        data,
        {
            "encoding": {"x": _months(x)},
            "resolve": {"scale": {"y": "independent"}},
            "layer": [
                {
                    "mark": {"type": "bar", "color": COLORS[0]},
                    "encoding": {"y": _value(bar, bar_title, titleColor=COLORS[0])},
                },
                {
                    "mark": {"type": "line", "color": COLORS[1], "point": True},
                    "encoding": {"y": _value(line, line_title, orient="right", titleColor=COLORS[1])},
                },
            ],
        },
        height=220,
    )


def lines(data: list[dict], x: str, series: str, value: str, title: str) -> dict:
    """One line per series over months (rows: {x, series, value})."""
    return _spec(
        data,
        {
            "mark": {"type": "line", "point": True},
            "encoding": {
                "x": _months(x),
                "y": _value(value, title),
                "color": {
                    "field": series,
                    "type": "nominal",
                    "title": None,
                    "sort": None,  # series in the data's order, not alphabetical
                    "scale": {"range": list(COLORS)},
                    "legend": {"orient": "top", "direction": "vertical"},
                },
            },
        },
        height=220,
    )


def channel_bars(data: list[dict], cac: str, ratio: str, cac_title: str, ratio_title: str) -> dict:
    """CAC per channel above LTV : CAC per channel, with the healthy 3 : 1 line (one above the
    other, so each keeps the full width on a phone)."""
    top = {"width": PLOT, **_hbar_panel(data, "channel", cac, cac + "_text", cac_title, COLORS[0])}
    bottom = {"width": PLOT, **_hbar_panel(data, "channel", ratio, ratio + "_text", ratio_title, COLORS[2])}
    bottom["layer"].append(
        {
            "data": {"values": [{"x": 3}]},
            "mark": {"type": "rule", "color": COLORS[3], "strokeDash": [4, 3]},
            "encoding": {"x": {"field": "x", "type": "quantitative"}, "y": None},
        }
    )
    return _spec(data, {"vconcat": [top, bottom], "spacing": 16}, width=None)


LOCALES = {"en": "en-US", "ru": "ru-RU"}
_ROOT = re.compile(r'<svg([^>]*?) width="([\d.]+)" height="([\d.]+)"')
_HIDDEN = re.compile(r'<text[^>]*\sopacity="0"[^>]*>[^<]*</text>')


def svg(spec: dict, language: str = "en") -> str:
    """The chart as an SVG element (no XML declaration), ready to inline; axis numbers in the
    language's format. It scales to its box by its viewBox (the page's CSS gives it the width),
    growing at most GROW times its drawn size; labels Vega hid to avoid overlaps are left out."""
    out = vl_convert.vegalite_to_svg(spec, format_locale=LOCALES[language])
    out = out[out.index("<svg") :]
    grow = round(float(_ROOT.search(out).group(2)) * GROW)
    out = _ROOT.sub(rf'<svg\1 style="max-width:{grow}px"', out, count=1)
    return _HIDDEN.sub("", out)


# -- page ---------------------------------------------------------------------------------------

CSS = """
body{font-family:DejaVu Sans,Arial,sans-serif;margin:24px;color:#222;max-width:1100px;overflow-wrap:anywhere}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 4px;border-top:1px solid #ddd;padding-top:16px}
h3{font-size:15px;margin:18px 0 2px} .meta{color:#666;font-size:13px}
.formula{color:#555;font-size:12px;margin:2px 0 8px;max-width:900px}
figure{margin:0} figure.chart svg{display:block;width:100%;height:auto}
.table{max-width:100%;overflow-x:auto;-webkit-overflow-scrolling:touch;margin:8px 0}
table{border-collapse:collapse;font-size:12px;overflow-wrap:normal} th,td{border:1px solid #ddd;padding:3px 8px}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap} th{background:#f4f4f4}
.note{color:#888;font-style:italic}
@media (max-width:600px){body{margin:12px} h2{font-size:17px} th,td{padding:3px 5px}}
"""

# Counts the charts that drew (a laid-out <svg> with drawn marks in each chart figure), for a test.
SCRIPT = """
document.addEventListener('DOMContentLoaded', function () {
  var figs = document.querySelectorAll('figure.chart');
  var drawn = 0;
  figs.forEach(function (f) {
    var svg = f.querySelector('svg');
    if (svg && svg.getBoundingClientRect().width > 0 && svg.querySelector('.role-mark > *')) { drawn += 1; }
  });
  document.body.setAttribute('data-charts', String(figs.length));
  document.body.setAttribute('data-charts-drawn', String(drawn));
});
"""


def _cell(c, language: str) -> str:
    if isinstance(c, Num):
        m, p, d, v = (html.escape(str(x), quote=True) for x in c.key)
        raw = "null" if c.value is None else repr(float(c.value))
        return (
            f'<td class="n" data-measure="{m}" data-period="{p}" data-dimension="{d}" '
            f'data-dimension-value="{v}" data-value="{raw}">'
            f"{html.escape(c.empty if c.value is None else fmt(c.value, language))}</td>"
        )
    return f"<td>{html.escape(str(c))}</td>"


def section_html(s: Section, language: str, level: int = 3) -> str:
    parts = [
        f"<h{level}>{html.escape(s.title)}</h{level}>",
        f'<p class="formula">{html.escape(s.formula)}</p>',
    ]
    if s.chart is not None:
        parts.append(f'<figure class="chart">{svg(s.chart, language)}</figure>')
    elif s.note:
        parts.append(f'<p class="note">{html.escape(s.note)}</p>')
    if s.rows:
        if s.table_note:
            parts.append(f'<p class="formula">{html.escape(s.table_note)}</p>')
        head = "".join(f"<th>{html.escape(h)}</th>" for h in s.head)
        body = "".join("<tr>" + "".join(_cell(c, language) for c in row) + "</tr>" for row in s.rows)
        parts.append(
            f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
        )
    return "\n".join(parts)


def page(title: str, language: str, blocks: list[tuple[str, str, list[Section]]]) -> str:
    """The whole document: blocks of (heading, meta line, sections), one block per source."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for heading, meta, sections in blocks:
        body.append(f'<h2>{html.escape(heading)}</h2><p class="meta">{html.escape(meta)}</p>')
        body += [section_html(s, language) for s in sections]
    return (
        f'<!DOCTYPE html>\n<html lang="{language}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{SCRIPT}</script>\n</body></html>\n"
    )
