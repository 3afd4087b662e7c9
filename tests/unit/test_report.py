"""The HTML report on the hand-built mirror of test_metrics: content, languages, CLI, browser."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.mirror.store import Mirror
from connector.report import page as report
from connector.report.charts import fmt
from tests.browser import check_report, page_numbers
from tests.unit.test_metrics import build, run

SRC = SimpleNamespace(name="shop", currency="RUB")


@pytest.fixture
def mirror(tmp_path):
    m = Mirror(str(tmp_path / "m.db"))
    build(m)
    run(m)
    yield m
    m.close()


def stored(conn) -> dict:
    return {
        tuple(r[:4]): r[4]
        for r in conn.execute(
            "SELECT measure, period, dimension, dimension_value, value FROM metrics WHERE source = 'shop'"
        )
    }


def make(m, language="en", months=12) -> str:
    return report.build(m.conn, [SRC], language=language, months=months, churn_days=90, tz="Europe/Moscow")


def test_every_number_is_a_metrics_row(mirror):
    page = make(mirror)
    rows = stored(mirror.conn)
    cells = page_numbers(page)
    assert len(cells) > 100
    for key, value, text in cells:
        # a channel with spend and no clients (facebook) has no CAC: its cells say so
        no_clients = key[0] in ("cac", "ltv_cac") and key[3] == "facebook"
        assert rows.get(key) == value and text == ("no clients" if no_clients else fmt(value)), key
    shown = {k for k, _, _ in cells}
    # the headline measures are all on the page
    for key in [
        ("revenue", "2026-02-01", "all", "all"),
        ("funnel_conversion", "all", "stage", "1/20"),
        ("manager_win_rate", "all", "manager", "3"),
        ("cac", "all", "channel", "facebook"),
        ("churn_rate", "2026-05-01", "all", "all"),
        ("nps", "2026-03-01", "all", "all"),
        ("lead_conversion", "2026-03-01", "all", "all"),
        ("ltv_cac", "all", "channel", "google"),
    ]:
        assert key in shown, key


def test_each_chart_states_its_formula_and_draws_svg(mirror):
    page = make(mirror)
    assert page.count('<figure class="chart"><svg') == 6  # one pipeline: 6 charts
    for formula in (
        "conversion = deals reached at the next stage",
        "CAC = spend / new clients",
        "NPS = (answers of 9-10 - answers of 0-6)",
        "win rate = won / (won + lost)",
        "active for 90 days",
    ):
        assert formula in page
    assert "<script src" not in page and "http://" not in page.replace("http://www.w3.org", "")
    assert "https://" not in page.replace("https://vega.github.io", "")


def test_russian_labels_and_numbers(mirror):
    page = make(mirror, "ru")
    assert "Воронка: Sales" in page and "Рейтинг менеджеров" in page and 'lang="ru"' in page
    assert ">10\u00a0000</td>" in page and ">11,94</td>" in page


def test_months_limit_the_monthly_rows(mirror):
    page = make(mirror, months=3)
    periods = {k[1] for k, _, _ in page_numbers(page) if k[0] == "revenue"}
    assert periods == {"2026-09-01", "2026-10-01", "2026-11-01"}


def test_no_measures_is_a_clear_error(tmp_path):
    m = Mirror(str(tmp_path / "empty.db"))
    with pytest.raises(report.ReportError, match="source 'shop' has no measures yet: run `crm-connector kpi"):
        make(m)


def test_a_source_without_measures_gets_a_line_not_an_error(mirror):
    page = report.build(
        mirror.conn,
        [SRC, SimpleNamespace(name="b24", currency="RUB")],
        language="en",
        months=12,
        churn_days=90,
        tz="UTC",
    )
    assert "Source: b24</h2>" in page and "No measures yet: run `crm-connector kpi --source b24`." in page
    assert page.count('<figure class="chart"><svg') == 6
    with pytest.raises(
        report.ReportError, match="sources 'b24', 'x' have no measures yet: run `crm-connector kpi` first"
    ):
        report.build(
            mirror.conn,
            [SimpleNamespace(name="b24", currency="RUB"), SimpleNamespace(name="x", currency="RUB")],
            language="en",
            months=12,
            churn_days=90,
            tz="UTC",
        )


def test_cli_writes_the_file_and_prints_its_path(mirror, tmp_path, monkeypatch):
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[storage]\npath = "{tmp_path / "m.db"}"\n\n[[sources]]\nname = "shop"\nkind = "amocrm"\n'
        'base_url = "https://x.amocrm.ru"\naccess_token = "t0ken-value-abc"\n\n'
        '[schedule]\ntimezone = "Europe/Moscow"\n\n[report]\nlanguage = "ru"\npath = "out/r.html"\n'
    )
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["--config", str(cfg), "report", "--months", "2"])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == f"Report: {tmp_path / 'out' / 'r.html'}"
    assert "Отчёт по продажам" in (tmp_path / "out" / "r.html").read_text(encoding="utf-8")
    r = CliRunner().invoke(main, ["--config", str(cfg), "report", "--out", "x.html", "--source", "nope"])
    assert r.exit_code == 2 and "no source named 'nope'" in r.output


def test_opens_in_headless_chromium(mirror, tmp_path):
    path = tmp_path / "report.html"
    report.write(str(path), make(mirror, "ru"))
    page = check_report(path, stored(mirror.conn), "unit-report-ru.png", "ru")
    assert 'data-charts="6"' in page.dom


def test_a_broken_chart_is_caught(mirror, tmp_path):
    """The browser check can fail: a chart whose SVG lost its marks is reported."""
    path = tmp_path / "broken.html"
    page = make(mirror)
    start = page.index('<figure class="chart">') + len('<figure class="chart">')
    end = page.index("</figure>", start)
    report.write(str(path), page[:start] + '<svg width="0" height="0"></svg>' + page[end:])
    with pytest.raises(AssertionError, match="'6', '5'"):
        check_report(path, stored(mirror.conn), "unit-report-broken.png")


def test_a_wrong_number_is_caught(mirror, tmp_path):
    path = tmp_path / "wrong.html"
    page = make(mirror)
    report.write(str(path), page.replace('data-value="10000.0">10,000<', 'data-value="10001.0">10,001<', 1))
    with pytest.raises(AssertionError, match="revenue"):
        check_report(path, stored(mirror.conn), "unit-report-wrong.png")


def test_a_script_error_is_caught(mirror, tmp_path):
    path = tmp_path / "error.html"
    report.write(str(path), make(mirror).replace("</body>", "<script>undefinedFunction();</script></body>"))
    with pytest.raises(AssertionError, match="undefinedFunction"):
        check_report(path, stored(mirror.conn), "unit-report-error.png")


def test_report_reads_a_mirror_in_a_read_only_folder(mirror, tmp_path):
    """It only reads: a mirror whose folder (and file) nobody may write still gives the report,
    and the mirror is left byte for byte as it was."""
    import hashlib
    import os

    from tests.unit.test_storage_faults import run_restricted

    mirror.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    mirror.close()
    ro, out = tmp_path / "ro", tmp_path / "out"
    ro.mkdir()
    out.mkdir()
    os.replace(tmp_path / "m.db", ro / "m.db")
    for suffix in ("-wal", "-shm"):
        if (tmp_path / f"m.db{suffix}").exists():
            os.unlink(tmp_path / f"m.db{suffix}")
    cfg = out / "config.toml"
    cfg.write_text(
        f'[storage]\npath = "{ro / "m.db"}"\n\n[[sources]]\nname = "shop"\nkind = "amocrm"\n'
        'base_url = "https://x.amocrm.ru"\naccess_token = "t0ken-value-abc"\n\n'
        '[schedule]\ntimezone = "Europe/Moscow"\n'
    )
    before = hashlib.sha256((ro / "m.db").read_bytes()).hexdigest()
    os.chmod(ro / "m.db", 0o444)
    os.chmod(ro, 0o555)
    try:
        r = run_restricted(str(cfg), "report", "--out", str(out / "r.html"))
    finally:
        os.chmod(ro, 0o755)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"Report: {out / 'r.html'}"
    assert "Sales report" in (out / "r.html").read_text(encoding="utf-8")
    assert hashlib.sha256((ro / "m.db").read_bytes()).hexdigest() == before
