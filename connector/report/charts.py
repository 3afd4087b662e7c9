"""The report page: Vega-Lite charts rendered to inline SVG, tables, and the HTML around them.

Charts are Vega-Lite specs rendered by vl-convert (Vega's own renderer, run offline inside the
Python wheel): the page holds plain SVG, no script and no font or library to fetch, so it opens
offline and survives being mailed. Every number in a table cell carries the `metrics` row it
shows (`data-measure`, `data-period`, `data-dimension`, `data-dimension-value`, `data-value`);
chart labels are the same formatted texts.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import vl_convert

SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
COLORS = ("#4C78A8", "#F58518", "#54A24B", "#E45756")
FONT = "DejaVu Sans, Arial, sans-serif"


@dataclass(frozen=True)
class Num:
    """A table cell showing one `metrics` row's value."""

    key: tuple[str, str, str, str]  # measure, period, dimension, dimension_value
    value: float | None


@dataclass
class Section:
    title: str
    formula: str
    chart: dict | None = None  # a Vega-Lite spec (data inline), None: no data
    head: list[str] = field(default_factory=list)
    rows: list[list] = field(default_factory=list)  # cells: str or Num
    note: str = ""  # shown instead of the chart when there is none


def fmt(value: float | None, language: str = "en") -> str:
    """A number as the page shows it: thousands grouped, at most two decimals, '—' for empty."""
    if value is None:
        return "—"
    text = f"{value:,.2f}".rstrip("0").rstrip(".")
    text = "0" if text == "-0" else text
    if language == "ru":
        text = text.replace(",", "\u00a0").replace(".", ",")
    return text


# -- charts -------------------------------------------------------------------------------------


def _spec(data: list[dict], body: dict, width: int = 560, height: int | None = None) -> dict:
    spec = {
        "$schema": SCHEMA,
        "data": {"values": data},
        "width": width,
        "config": {"font": FONT, "view": {"stroke": None}, "axis": {"labelLimit": 220}},
        **body,
    }
    if height:
        spec["height"] = height
    return spec


def hbar(data: list[dict], label: str, value: str, text: str, title: str, color: str = COLORS[0]) -> dict:
    """Horizontal bars in the data's order, each with its formatted value beside it."""
    enc = {
        "y": {"field": label, "type": "nominal", "sort": None, "title": None},
        "x": {"field": value, "type": "quantitative", "title": title},
    }
    return _spec(
        data,
        {
            "encoding": enc,
            "layer": [
                {"mark": {"type": "bar", "color": color}},
                {"mark": {"type": "text", "align": "left", "dx": 4}, "encoding": {"text": {"field": text}}},
            ],
        },
        height=max(60, 24 * len(data)),
    )


def bars_and_line(data: list[dict], x: str, bar: str, line: str, bar_title: str, line_title: str) -> dict:
    """Monthly bars (left axis) with a line over them (right axis)."""
    xs = {"field": x, "type": "ordinal", "title": None, "sort": None}
    return _spec(
        data,
        {
            "encoding": {"x": xs},
            "resolve": {"scale": {"y": "independent"}},
            "layer": [
                {
                    "mark": {"type": "bar", "color": COLORS[0]},
                    "encoding": {
                        "y": {
                            "field": bar,
                            "type": "quantitative",
                            "title": bar_title,
                            "axis": {"titleColor": COLORS[0]},
                        }
                    },
                },
                {
                    "mark": {"type": "line", "color": COLORS[1], "point": True},
                    "encoding": {
                        "y": {
                            "field": line,
                            "type": "quantitative",
                            "title": line_title,
                            "axis": {"orient": "right", "titleColor": COLORS[1]},
                        }
                    },
                },
            ],
        },
        height=240,
    )


def lines(data: list[dict], x: str, series: str, value: str, title: str) -> dict:
    """One line per series over months (rows: {x, series, value})."""
    return _spec(
        data,
        {
            "mark": {"type": "line", "point": True},
            "encoding": {
                "x": {"field": x, "type": "ordinal", "title": None, "sort": None},
                "y": {"field": value, "type": "quantitative", "title": title},
                "color": {
                    "field": series,
                    "type": "nominal",
                    "title": None,
                    "scale": {"range": list(COLORS)},
                    "legend": {"orient": "top"},
                },
            },
        },
        height=220,
    )


def channel_bars(data: list[dict], cac: str, ratio: str, cac_title: str, ratio_title: str) -> dict:
    """CAC per channel beside LTV : CAC per channel, with the healthy 3 : 1 line."""
    y = {"field": "channel", "type": "nominal", "sort": None, "title": None}
    height = max(60, 24 * len(data))

    def panel(field_, label, title, color, rule=None):
        layers = [
            {"mark": {"type": "bar", "color": color}},
            {"mark": {"type": "text", "align": "left", "dx": 4}, "encoding": {"text": {"field": label}}},
        ]
        if rule is not None:
            layers.append(
                {
                    "data": {"values": [{"x": rule}]},
                    "mark": {"type": "rule", "color": COLORS[3], "strokeDash": [4, 3]},
                    "encoding": {"x": {"field": "x", "type": "quantitative"}, "y": None},
                }
            )
        return {
            "width": 260,
            "height": height,
            "encoding": {"y": y, "x": {"field": field_, "type": "quantitative", "title": title}},
            "layer": layers,
        }

    return _spec(
        data,
        {
            "hconcat": [
                panel(cac, cac + "_text", cac_title, COLORS[0]),
                panel(ratio, ratio + "_text", ratio_title, COLORS[2], 3),
            ]
        },
        width=None,
    )


LOCALES = {"en": "en-US", "ru": "ru-RU"}


def svg(spec: dict, language: str = "en") -> str:
    """The chart as an SVG element (no XML declaration), ready to inline; axis numbers in the
    language's format."""
    if spec.get("width") is None:
        spec = {k: v for k, v in spec.items() if k != "width"}
    out = vl_convert.vegalite_to_svg(spec, format_locale=LOCALES[language])
    return out[out.index("<svg") :]


# -- page ---------------------------------------------------------------------------------------

CSS = """
body{font-family:DejaVu Sans,Arial,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 4px;border-top:1px solid #ddd;padding-top:16px}
h3{font-size:15px;margin:18px 0 2px} .meta{color:#666;font-size:13px}
.formula{color:#555;font-size:12px;margin:2px 0 8px;max-width:900px}
table{border-collapse:collapse;font-size:12px;margin:8px 0} th,td{border:1px solid #ddd;padding:3px 8px}
td.n{text-align:right;font-variant-numeric:tabular-nums} th{background:#f4f4f4}
.note{color:#888;font-style:italic} figure{margin:0}
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
            f'data-dimension-value="{v}" data-value="{raw}">{html.escape(fmt(c.value, language))}</td>'
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
        head = "".join(f"<th>{html.escape(h)}</th>" for h in s.head)
        body = "".join("<tr>" + "".join(_cell(c, language) for c in row) + "</tr>" for row in s.rows)
        parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    return "\n".join(parts)


def page(title: str, language: str, blocks: list[tuple[str, str, list[Section]]]) -> str:
    """The whole document: blocks of (heading, meta line, sections), one block per source."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for heading, meta, sections in blocks:
        body.append(f'<h2>{html.escape(heading)}</h2><p class="meta">{html.escape(meta)}</p>')
        body += [section_html(s, language) for s in sections]
    return (
        f'<!DOCTYPE html>\n<html lang="{language}"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{SCRIPT}</script>\n</body></html>\n"
    )
