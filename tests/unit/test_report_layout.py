"""The report on a phone (390 px) and a desktop (1400 px), its axes, labels and language.

Layout is checked in headless Chromium (screenshots in tests/artifacts); tick labels also
statically, by estimating each label's extent in the SVG the page holds.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.report import page as report
from connector.report.charts import svg
from tests.browser import layout
from tests.unit.test_report import SRC, make, mirror  # noqa: F401  (mirror is a fixture)

NS = "{http://www.w3.org/2000/svg}"
# DejaVu Sans advance widths in em: digits, separators; other characters get a generous 0.7.
WIDTHS = {**dict.fromkeys("0123456789", 0.636), ",": 0.318, ".": 0.318, " ": 0.318, "\u00a0": 0.318}


def charts(page: str) -> list[str]:
    return re.findall(r'<figure class="chart">(<svg.*?</svg>)</figure>', page, re.S)


def label_boxes(chart: str) -> list[list[tuple[str, float, float, float, float]]]:
    """Per axis of the chart: (text, left, right, top, bottom) of each tick label, estimated from
    its position, anchor, rotation and font size."""
    axes = []
    for g in ET.fromstring(chart).iter(f"{NS}g"):
        if "role-axis-label" not in (g.get("class") or ""):
            continue
        boxes = []
        for t in g.iter(f"{NS}text"):
            text = t.text or ""
            size = float(t.get("font-size", "10px").rstrip("px"))
            width = size * sum(WIDTHS.get(ch, 0.7) for ch in text)
            x, y = map(float, re.search(r"translate\(([-\d.e]+),([-\d.e]+)\)", t.get("transform")).groups())
            rotated = re.search(r"rotate\((-?\d+)", t.get("transform")) is not None
            start = {"start": 0, "middle": width / 2, "end": width}[t.get("text-anchor", "start")]
            if rotated:  # vertical text: its length runs along y
                boxes.append((text, x - size, x, y - start, y - start + width))
            else:
                boxes.append((text, x - start, x - start + width, y - size, y))
        axes.append(boxes)
    return axes


def collisions(chart: str, gap: float = 2.0) -> list[str]:
    """Pairs of tick labels on one axis closer than `gap` px in both directions."""
    out = []
    for boxes in label_boxes(chart):
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                if a[1] < b[2] + gap and b[1] < a[2] + gap and a[3] < b[4] + gap and b[3] < a[4] + gap:
                    out.append(f"{a[0]} | {b[0]}")
    return out


def big_funnel(language: str = "en") -> str:
    """A pipeline with about 1,300 deals: the case whose ticks read '1,2001,300'."""
    deals = {"1/10": 1320, "1/11": 1250, "1/12": 910, "1/13": 400, "1/14": 150}
    m = {("funnel_deals", "all", "stage", s): v for s, v in deals.items()}
    names = report.Names({"1": "Sales"}, {s: (f"Stage {s}", i, "open") for i, s in enumerate(deals)}, {})
    return report.Builder(m, names, language, 12, 90, "RUB").funnels()[0].chart


# -- phone and desktop ------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["en", "ru"])
def test_page_fits_a_phone_and_a_desktop(mirror, tmp_path, language):  # noqa: F811
    """At 390 px nothing is wider than the screen (wide tables scroll in their own box), every
    chart shrinks to fit with text still readable; at 1400 px the same. On screen no two tick
    labels of an axis touch and no chart text is cut off by the chart's edge."""
    path = tmp_path / f"report-{language}.html"
    report.write(str(path), make(mirror, language))
    for width in (390, 1400):
        got = layout(path, width, f"unit-report-{language}-{width}.png")
        assert got["viewport"] == width
        assert got["scrollWidth"] <= width, got
        assert got["wide"] == [], got["wide"]
        assert got["charts"] == 6
        assert got["overlaps"] == [], got["overlaps"]
        assert got["cut"] == [], got["cut"]
        assert got["minFont"] >= (9 if width == 390 else 10), got["minFont"]


def test_the_page_declares_a_viewport_and_scalable_charts(mirror):  # noqa: F811
    page = make(mirror)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "figure.chart svg{display:block;width:100%;height:auto}" in page
    for chart in charts(page):
        root = chart[: chart.index(">")]
        assert re.search(r'viewBox="0 0 [\d.]+ [\d.]+"', root) and " width=" not in root, root
    assert page.count('<div class="table"><table>') == page.count("<table>") == 6
    assert ".table{max-width:100%;overflow-x:auto" in page


# -- axes and labels ----------------------------------------------------------------------------


def test_tick_labels_never_collide(mirror):  # noqa: F811
    """No two tick labels of an axis overlap, estimated from the SVG itself, and the SVG holds
    only the labels shown: a label Vega hid is not left in as text ('1,2001,300')."""
    for language in ("en", "ru"):
        for chart in [*charts(make(mirror, language)), svg(big_funnel(language), language)]:
            assert collisions(chart) == []
            assert 'opacity="0"' not in chart
            axis_text = ["".join(t for t, *_ in boxes) for boxes in label_boxes(chart)]
            assert not any("1,2001,300" in a or "1\u00a02001\u00a0300" in a for a in axis_text)
    ticks = [t for t, *_ in label_boxes(svg(big_funnel()))[0]]
    values = [int(t.replace(",", "")) for t in ticks]
    steps = {b - a for a, b in zip(values, values[1:])}
    assert 3 <= len(ticks) <= 5 and len(steps) == 1, ticks  # a few, evenly spaced


def test_the_collision_check_can_fail():
    """A 200-px value axis up to 1,400 made to label every tick is caught."""
    axis = {"labelOverlap": False, "tickCount": 14}
    spec = {
        "data": {"values": [{"s": "a", "v": 1320}, {"s": "b", "v": 1250}]},
        "mark": "bar",
        "width": 200,
        "encoding": {
            "y": {"field": "s", "type": "nominal"},
            "x": {"field": "v", "type": "quantitative", "axis": axis},
        },
    }
    assert "1,200 | 1,300" in collisions(svg(spec))


def test_axes_carry_units(mirror):  # noqa: F811
    """Amount axes name the currency, shares say %, the ratio says times, NPS its points."""
    titles = {
        "en": [
            "Revenue, RUB",
            "CAC, RUB",
            "LTV : CAC, times",
            "Share of clients, %",
            "NPS, points",
        ],
        "ru": ["Выручка, RUB", "CAC, RUB", "LTV : CAC, раз", "Доля клиентов, %", "NPS, пункты"],
    }
    for language, want in titles.items():
        page = make(mirror, language)
        axis_titles = re.findall(r'role-axis-title".*?<text[^>]*>([^<]*)</text>', page, re.S)
        for title in want:
            assert any(title in t for t in axis_titles), (title, axis_titles)
        assert "CSAT, %" in " ".join(axis_titles)  # the test mirror has both scores


def test_a_channel_with_spend_and_no_clients_shows_its_spend(mirror):  # noqa: F811
    """facebook spent 1,000 and brought no client: 'no clients' in the CAC and LTV : CAC cells
    (which still carry their metrics rows) and the spend beside its CAC bar, not a blank."""
    page = make(mirror)
    cells = re.findall(
        r'data-measure="(cac|ltv_cac)"[^>]*data-dimension-value="facebook"[^>]*>([^<]*)<', page
    )
    assert cells == [("cac", "no clients"), ("ltv_cac", "no clients")]
    assert "no clients, spent 1,000 RUB" in page
    assert "нет клиентов, потрачено 1\u00a0000 RUB" in make(mirror, "ru")


@pytest.mark.parametrize("language", ["en", "ru"])
def test_no_two_columns_share_a_title(mirror, language):  # noqa: F811
    page = make(mirror, language)
    tables = re.findall(r"<thead><tr>(.*?)</tr></thead>", page)
    assert len(tables) == 6
    for head in tables:
        titles = re.findall(r"<th>(.*?)</th>", head)
        assert len(titles) == len(set(titles)), titles


def test_computed_at_in_the_language_and_time_zone(mirror):  # noqa: F811
    """Stored 2026-11-23T10:00:00Z, shown in Moscow time (13:00) and words, never as raw ISO."""
    en, ru = make(mirror, "en"), make(mirror, "ru")
    assert "Computed at: 23 November 2026, 13:00 (Europe/Moscow)" in en
    assert "Рассчитано: 23 ноября 2026, 13:00 (Europe/Moscow)" in ru
    for page in (en, ru):
        assert "2026-11-23T10:00:00Z" not in page and "2026-11-23" not in page


def test_text_above_a_chart_describes_only_the_chart(mirror):  # noqa: F811
    """The line between a heading and its chart defines what the chart draws; the table's
    other columns are defined above the table."""
    page = make(mirror)
    above = dict(re.findall(r'<h3>([^<]*)</h3>\n<p class="formula">([^<]*)</p>\n<figure', page))
    assert "median" not in above["Funnel: Sales"].lower()
    assert "lead" not in above["Revenue and new clients by month"].lower()
    assert "win rate" not in above["Manager league table"] and "revenue" in above["Manager league table"]
    assert "NPS =" in above["Satisfaction: NPS and CSAT"] and "CSAT =" in above["Satisfaction: NPS and CSAT"]
    for defined in ("Median days in stage =", "Leads converted =", "win rate = won / (won + lost)"):
        assert defined in page
    # a month of NPS answers only: the chart draws NPS, so only NPS is explained above it
    m = {("nps", "2026-03-01", "all", "all"): 20.0, ("nps_answers", "2026-03-01", "all", "all"): 5.0}
    m[("revenue", "2026-03-01", "all", "all")] = 100.0
    s = report.Builder(m, report.Names({}, {}, {}), "en", 12, 90, "RUB").satisfaction()
    assert "NPS =" in s.formula and "CSAT" not in s.formula and "CSAT =" in s.table_note
    assert [t["series"] for t in s.chart["data"]["values"]] == ["NPS"]


# -- languages ----------------------------------------------------------------------------------


def test_months_and_numbers_in_the_language(mirror):  # noqa: F811
    en, ru = make(mirror, "en"), make(mirror, "ru")
    assert "<td>Feb\u00a02026</td>" in en and "<td>фев\u00a02026</td>" in ru
    assert ">10,000</td>" in en and ">10\u00a0000</td>" in ru
    assert "<td>All time</td>" in en and "<td>За всё время</td>" in ru
    assert "→ 100%" in en and "→ 100\u00a0%" in ru
    assert "2026-02</td>" not in en + ru  # no raw period left


def test_report_lang_overrides_the_config(mirror, tmp_path, monkeypatch):  # noqa: F811
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[storage]\npath = "{tmp_path / "m.db"}"\n\n[[sources]]\nname = "shop"\nkind = "amocrm"\n'
        'base_url = "https://x.amocrm.ru"\naccess_token = "t0ken-value-abc"\n\n'
        '[schedule]\ntimezone = "Europe/Moscow"\n\n[report]\nlanguage = "ru"\n'
    )
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["--config", str(cfg), "report", "--out", "en.html", "--lang", "en"])
    assert r.exit_code == 0, r.output
    text = (tmp_path / "en.html").read_text(encoding="utf-8")
    assert "Sales report" in text and 'lang="en"' in text and "Отчёт" not in text
    r = CliRunner().invoke(main, ["--config", str(cfg), "report", "--out", "ru.html"])
    assert r.exit_code == 0 and "Отчёт по продажам" in (tmp_path / "ru.html").read_text(encoding="utf-8")
    r = CliRunner().invoke(main, ["--config", str(cfg), "report", "--lang", "de"])
    assert r.exit_code == 2 and "'de' is not one of 'en', 'ru'" in r.output
