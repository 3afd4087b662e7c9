"""The CLI as cron runs it: from another folder, without the sources' secrets for commands
that only read, JSON-only stdout for a log collector, output that fits the terminal."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from adapters.base import Page
from connector.cli import main
from connector.config.loader import load
from connector.kpi import engine as kpi
from connector.mirror.store import Mirror
from tests.unit import test_report
from tests.unit.test_kpi import NOW, S, build_mirror

UNSET = "CRM_TEST_NEVER_SET_TOKEN"


def write_app(tmp_path, token="tok-secret-123", source="main") -> str:
    """app/config.toml naming every file relatively: mirror, token file, spend file, report."""
    app = tmp_path / "app"
    app.mkdir(exist_ok=True)
    (app / "spend.csv").write_text("month,channel,amount\n2026-10,seo,100\n")
    (app / "config.toml").write_text(f"""
[storage]
path = "mirror.db"
token_path = "tokens.json"

[[sources]]
name = "{source}"
kind = "amocrm"
base_url = "http://127.0.0.1:9"
access_token = "{token}"

[kpi.spend]
file = "spend.csv"

[kpi.fields]
win_rate = "KPI: Win rate, %"

[report]
path = "report.html"
""")
    return str(app / "config.toml")


def synced(db) -> None:
    """A mirror with one ok deals run."""
    with Mirror(str(db)) as m:
        run = m.start_run("r1", "main", "deals", "2026-11-23T10:00:00Z")
        m.save_page("main", "deals", Page(bookmark='{"api_filter":false,"since":"2026-11-23T10:00:00Z"}'))
        m.finish_run(run, "ok", 1234, 1)


def cli(*args, columns=200, env=None):
    return CliRunner().invoke(main, list(args), env={"COLUMNS": str(columns), **(env or {})})


def test_relative_files_are_found_beside_the_config_not_the_current_folder(tmp_path, monkeypatch):
    config = write_app(tmp_path)
    synced(tmp_path / "app" / "mirror.db")
    monkeypatch.chdir(tmp_path)  # cron's folder, not the config's
    res = cli("--config", "app/config.toml", "status")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == f"Mirror: {tmp_path / 'app' / 'mirror.db'}"  # the file it reads, said first
    assert any(line.startswith("main") and " deals " in line and " 1,234 " in line for line in lines)
    assert not (tmp_path / "mirror.db").exists()  # no new empty mirror where cron stood
    cfg = load(config)
    assert cfg.storage_path == str(tmp_path / "app" / "mirror.db")
    assert cfg.token_path == str(tmp_path / "app" / "tokens.json")
    assert cfg.kpi.spend.file == str(tmp_path / "app" / "spend.csv")
    assert cfg.report.path == str(tmp_path / "app" / "report.html")


def test_status_says_when_the_mirror_it_names_is_not_there_yet(tmp_path, monkeypatch):
    write_app(tmp_path)
    monkeypatch.chdir(tmp_path)
    res = cli("--config", "app/config.toml", "status")
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == f"Mirror: {tmp_path / 'app' / 'mirror.db'} (not created yet)"
    doc = json.loads(cli("--config", "app/config.toml", "status", "--json").stdout)
    assert doc["mirrors"] == [
        {"path": str(tmp_path / "app" / "mirror.db"), "sources": ["main"], "exists": False}
    ]


def test_read_only_commands_run_without_the_sources_secrets(tmp_path, monkeypatch):
    monkeypatch.delenv(UNSET, raising=False)
    # status and kpi show on a mirror with KPIs
    config = write_app(tmp_path, token="${" + UNSET + "}", source=S)
    db = tmp_path / "app" / "mirror.db"
    build_mirror(str(db)).close()
    with Mirror(str(db)) as m:
        kpi.compute(m, S, load(config, secrets=False).kpi, now=NOW)
    assert cli("--config", config, "status").exit_code == 0
    res = cli("--config", config, "kpi", "show", S, "contact", "1")
    assert res.exit_code == 0, res.output
    assert any(line.split()[:2] == ["win_rate", "80"] for line in res.output.splitlines())
    # the commands that reach the CRM still say what is missing, exit 2
    for args in (["sync"], ["kpi"], ["check"]):
        res = cli("--config", config, *args)
        assert res.exit_code == 2, (args, res.output)
        assert f"environment variable {UNSET} is not set" in res.output


def test_report_runs_without_the_sources_secrets(tmp_path, monkeypatch):
    monkeypatch.delenv(UNSET, raising=False)
    write_app(tmp_path, token="${" + UNSET + "}", source="shop")
    with Mirror(str(tmp_path / "app" / "mirror.db")) as m:  # a mirror with stored measures
        test_report.build(m)
        test_report.run(m)
    monkeypatch.chdir(tmp_path)
    res = cli("--config", "app/config.toml", "report")
    assert res.exit_code == 0, res.output
    assert res.output.strip() == f"Report: {tmp_path / 'app' / 'report.html'}"
    assert (tmp_path / "app" / "report.html").exists()
    # --log-format json: stdout is one JSON line
    res = cli("--config", "app/config.toml", "--log-format", "json", "report")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"event": "report", "path": str(tmp_path / "app" / "report.html")}


@pytest.fixture
def kpi_config(tmp_path):
    config = write_app(tmp_path, source=S)
    build_mirror(str(tmp_path / "app" / "mirror.db")).close()
    return config


def test_kpi_with_json_logs_prints_only_json_lines(kpi_config):
    res = cli("--config", kpi_config, "--log-format", "json", "kpi", "--dry-run")
    assert res.exit_code == 0, res.output
    docs = [json.loads(line) for line in res.stdout.splitlines()]  # every line is JSON
    assert [d["source"] for d in docs] == [S] and docs[0]["dry_run"] is True
    assert docs[0]["values_changed"] > 0


def test_kpi_dry_run_says_would_touch(kpi_config):
    res = cli("--config", kpi_config, "kpi", "--dry-run")
    assert res.exit_code == 0, res.output
    summary = res.stdout.splitlines()[-1]
    assert summary.startswith(f"{S}: 6 clients computed, would touch ") and "values, 0 requests" in summary
    assert "touched" not in res.stdout and "changed" not in res.stdout


def test_kpi_show_fits_the_terminal_and_has_json(kpi_config):
    with Mirror(load(kpi_config).storage_path) as m:
        kpi.compute(m, S, load(kpi_config).kpi, now=NOW)
    res = cli("--config", kpi_config, "kpi", "show", S, "contact", "1", columns=60)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert max(len(line) for line in lines) <= 60, res.output
    start = next(line for line in lines if line.startswith("kpi ")).index("definition")
    win = next(i for i, line in enumerate(lines) if line.startswith("win_rate "))
    assert lines[win + 1][:start].strip() == ""  # its definition wraps under its own column
    res = cli("--config", kpi_config, "--log-format", "json", "kpi", "show", S, "contact", "1")
    doc = json.loads(res.stdout)
    assert {k["kpi"]: k["value"] for k in doc["kpis"]}["win_rate"] == 80
