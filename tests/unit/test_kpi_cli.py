"""`crm-connector kpi` and `kpi show` on a hand-built mirror (no CRM involved: dry runs only)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.config.loader import load
from connector.kpi import engine as kpi
from connector.mirror.store import Mirror
from tests.unit.test_kpi import NOW, S, build_mirror


@pytest.fixture
def config(tmp_path):
    return make_config(tmp_path)


def make_config(tmp_path):
    db = tmp_path / "mirror.db"
    build_mirror(str(db)).close()
    path = tmp_path / "config.toml"
    path.write_text(f"""
[storage]
path = "{db}"

[[sources]]
name = "{S}"
kind = "amocrm"
base_url = "http://127.0.0.1:9"
access_token = "tok-secret-123"

[kpi]
currency_rates = {{ USD = 90 }}

[kpi.fields]
win_rate = "KPI: Win rate, %"
deals_total = {{ contact = "KPI: Deals" }}

[[kpi.custom]]
name = "linked_deals"
target = "contact"
sql = "SELECT contact_id, count(*) FROM deal_contacts WHERE source = :source GROUP BY contact_id"
description = "deals linked through deal_contacts"
""")
    return str(path), str(db)


def run(config, *args):
    return CliRunner().invoke(main, ["--config", config[0], "kpi", *args])


def test_dry_run_prints_changes_and_sends_nothing(config):
    r = CliRunner().invoke(main, ["--config", config[0], "-v", "kpi", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert (
        f"{S} contact: would touch 4 cards and change 6 values; fields to find or create: "
        "'KPI: Deals', 'KPI: Win rate, %'" in r.output
    )
    assert "  contact 1 c1: win_rate -> 'KPI: Win rate, %': (empty) -> 80" in r.output
    assert "  contact 1 c1: deals_total -> 'KPI: Deals': (empty) -> 5" in r.output
    assert f"{S}: 6 clients computed, would touch 5 cards and change 7 values, 0 requests" in r.output
    assert "touched" not in r.output and "changed" not in r.output  # nothing was sent
    assert "EUR" in r.output  # the unconverted currency warning
    with Mirror(config[1]) as m:  # a dry run writes nothing: no history, no log, no run row
        for t in ("writeback_log", "kpi_values", "kpi_runs"):
            assert m.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] == 0, t


def test_only(config):
    r = run(config, "--dry-run", "--only", "deals_total")
    assert r.exit_code == 0 and "win_rate" not in r.output and "change 4 values" in r.output


def test_unknown_kpi_is_one_line_exit_2(config):
    r = run(config, "--only", "nope")
    assert r.exit_code == 2  # a usage error
    assert r.output.strip().splitlines() == [r.output.strip()] and "unknown KPI 'nope'" in r.output


def test_unknown_source_exit_2(config):
    r = run(config, "--source", "nope")
    assert r.exit_code == 2 and "nope" in r.output


def test_show(config):
    with Mirror(config[1]) as m:
        from connector.config.loader import load

        kpi.compute(m, S, load(config[0]).kpi, now=NOW)
    r = run(config, "show", S, "contact", "1")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == f"{S} contact 1, computed at 2026-11-23T10:00:00Z"
    assert any(line.split()[:2] == ["win_rate", "80"] and "won / (won + lost)" in line for line in lines)
    assert any(line.split()[:2] == ["linked_deals", "2"] and "deal_contacts" in line for line in lines)
    assert "tok-secret-123" not in r.output


def test_show_unknown_client(config):
    r = run(config, "show", S, "company", "999")
    assert r.exit_code == 1 and "no KPIs for company 999" in r.output


@pytest.mark.parametrize("verbose", [["-v"], []])
def test_kpi_on_a_never_synced_source_is_one_line_even_verbose(tmp_path, verbose):
    """Nothing crashed: the source was never synced. `-v` adds debug lines, never a traceback."""
    path = tmp_path / "config.toml"
    path.write_text(
        f'[storage]\npath = "{tmp_path / "m.db"}"\n\n[[sources]]\nname = "{S}"\n'
        f'kind = "amocrm"\nbase_url = "http://127.0.0.1:9"\naccess_token = "tok-secret-123"\n\n'
        f'[kpi.fields]\nwin_rate = "KPI: Win rate, %"\n'
    )
    r = CliRunner().invoke(main, ["--config", str(path), "kpi", *verbose])
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and "crashed" not in r.output, r.output
    errors = [x for x in r.output.splitlines() if x.startswith("error:")]
    assert errors == [
        f"error: source '{S}' has no complete sync yet: run `crm-connector sync --source {S}` first"
    ], r.output


def test_kpi_full_recomputes_every_client_where_a_nightly_pass_is_incremental(config, monkeypatch):
    cfg = load(config[0])
    with Mirror(config[1]) as m:  # a recorded pass (a dry run records none)
        kpi.compute(m, S, cfg.kpi, cfg.sources[0].currency, incremental=True)  # now
    plans = []
    real = kpi.incremental_plan
    monkeypatch.setattr(kpi, "incremental_plan", lambda *a: plans.append(real(*a)) or plans[-1])
    for args in (["--dry-run"], ["--dry-run", "--full"]):
        r = run(config, *args)
        assert r.exit_code == 0, r.output
    assert [(p.full, p.reason) for p in plans] == [(False, ""), (True, "[kpi] full_pass_days = 0")]
