"""Output that scales, against both sandboxes: one summary line per stream that
counts entities (not link rows), a wrong token said once per source, plain or JSON log lines
off a terminal, `check --json` and `kpi --json` as one JSON document on stdout, and the
progress totals each CRM can give."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.run import jobs, runtime


def write_config(tmp_path, amo, b24, amo_token=None, webhook=None):
    path = tmp_path / "config.toml"
    path.write_text(f"""
[storage]
path = "{tmp_path / "mirror.db"}"

[[sources]]
name = "amo"
kind = "amocrm"
base_url = "{amo.url}"
access_token = "{amo_token or amo.access_token}"

[[sources]]
name = "b24"
kind = "bitrix24"
webhook_url = "{webhook or b24.webhook_url}"

[kpi.fields]
win_rate = "KPI: Win rate, %"
""")
    return str(path)


def run(config, *args):
    return CliRunner().invoke(main, ["--config", config, *args])


@pytest.fixture
def config(tmp_path, amo_sandbox, b24_sandbox):
    return write_config(tmp_path, amo_sandbox, b24_sandbox)


def test_one_summary_per_stream_counting_entities(config, tmp_path):
    res = run(config, "sync")
    assert res.exit_code == 0, res.output
    ends = [line for line in res.stderr.splitlines() if " sync source=" in line]
    with sqlite3.connect(str(tmp_path / "mirror.db")) as conn:
        runs = conn.execute("SELECT source, stream, rows FROM sync_runs").fetchall()
        deals = dict(conn.execute("SELECT source, count(*) FROM deals GROUP BY source").fetchall())
        links = conn.execute("SELECT count(*) FROM deal_contacts").fetchone()[0]
    # each stream's end is said once, and nothing else mentions a stream's end
    assert sorted(re.search(r"source=(\S+) stream=(\S+)", line).groups() for line in ends) == sorted(
        (s, st) for s, st, _ in runs
    )
    assert links > 0
    for source in ("amo", "b24"):
        run_rows = next(r for s, st, r in runs if (s, st) == (source, "deals"))
        assert run_rows == deals[source]  # deals, not deals plus their contact links
        line = next(line for line in ends if f"source={source} stream=deals " in line)
        assert f" rows={deals[source]} " in line
    assert res.stdout.splitlines()[0].startswith("amo: ") and "11/11 streams ok" in res.stdout


def test_json_logs_stay_machine_readable(config):
    res = run(config, "--log-format", "json", "sync", "--source", "b24")
    assert res.exit_code == 0, res.output
    events = [json.loads(line) for line in res.stderr.splitlines()]  # every line is JSON
    ends = [e for e in events if e.get("event") == "sync"]
    assert len(ends) == 11 and {e["status"] for e in ends} == {"ok"}  # one per b24 stream
    assert all(isinstance(e["rows"], int) and e["source"] == "b24" for e in ends)
    assert "\x1b" not in res.stderr  # no progress drawing


def test_a_wrong_token_is_said_once_per_source(tmp_path, amo_sandbox, b24_sandbox):
    config = write_config(
        tmp_path,
        amo_sandbox,
        b24_sandbox,
        amo_token="wrong-token",
        webhook=b24_sandbox.webhook_url.replace("/rest/1/", "/rest/1/x"),
    )
    res = run(config, "sync")
    assert res.exit_code == 1
    said = [line for line in res.output.splitlines() if "token rejected" in line]
    assert len(said) == 1 and "source=amo stream=users" in said[0], res.output
    said = [line for line in res.output.splitlines() if "webhook URL or access token is wrong" in line]
    assert len(said) == 1 and "source=b24 stream=users" in said[0], res.output
    assert "amo: 0 rows, 1 requests, 0/11 streams ok (failed: users; not run: 10 streams)" in res.stdout
    assert len(res.output.splitlines()) == 4, res.output  # per source: the error, the summary


def test_check_json(config, amo_sandbox, b24_sandbox):
    run(config, "sync", "--source", "amo")
    res = run(config, "check", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["ok"] is True
    assert [(s["source"], s["kind"], s["status"]) for s in doc["sources"]] == [
        ("amo", "amocrm", "ok"),
        ("b24", "bitrix24", "ok"),
    ]
    streams = {(s["source"], s["stream"]): s for s in doc["streams"]}
    assert streams[("amo", "deals")]["last_sync"] == "ok"
    assert streams[("b24", "calls")] == {
        "source": "b24",
        "stream": "calls",
        "scope": "telephony",
        "last_sync": "never",
        "advice": "",
    }


def test_kpi_json_dry_run_and_real_run(config, tmp_path):
    assert run(config, "sync").exit_code == 0
    res = run(config, "-v", "kpi", "--dry-run", "--json", "--source", "amo")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    (amo,) = doc["sources"]
    assert doc["ok"] and amo["source"] == "amo" and amo["dry_run"] is True and amo["requests"] == 0
    assert amo["values_changed"] == len(amo["values"]) > 0
    assert {t["entity_type"]: t["fields_to_create"] for t in amo["by_type"]} == {
        "company": ["KPI: Win rate, %"],
        "contact": ["KPI: Win rate, %"],
    }
    assert sum(t["values"] for t in amo["by_type"]) == amo["values_changed"]
    assert all(v["kpi"] == "win_rate" and v["name"] for v in amo["values"])
    assert amo["measures"] is None  # a dry run leaves the measures alone
    with sqlite3.connect(str(tmp_path / "mirror.db")) as conn:
        assert conn.execute("SELECT count(*) FROM kpi_values").fetchone()[0] == 0  # dry: nothing

    res = run(config, "kpi", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [s["source"] for s in doc["sources"]] == ["amo", "b24"]
    assert all(
        s["dry_run"] is False and s["values_changed"] > 0 and s["rejected"] == 0 and "values" not in s
        for s in doc["sources"]
    )
    with sqlite3.connect(str(tmp_path / "mirror.db")) as conn:
        stored = dict(conn.execute("SELECT source, count(*) FROM metrics GROUP BY source").fetchall())
    assert {s["source"]: s["measures"]["rows"] for s in doc["sources"]} == stored
    assert all(n > 0 for n in stored.values())


def test_kpi_json_before_any_sync_names_the_source(config):
    res = run(config, "kpi", "--json")
    assert res.exit_code == 1
    assert json.loads(res.stdout) == {
        "ok": False,
        "sources": [
            {
                "source": "amo",
                "error": "source 'amo' has no complete sync yet: run `crm-connector sync --source amo` first",
            }
        ],
    }
    assert res.stderr.startswith("error: source 'amo' has no complete sync yet")


class Recorder:
    """A progress display that remembers what it was told, per stream."""

    def __init__(self):
        self.streams: dict[str, dict] = {}

    def start(self, label, step="", unit="rows", requests=None):
        self.now = self.streams[label] = {"step": step, "unit": unit, "expected": 0, "added": 0}

    def expect(self, n):
        self.now["expected"] += n

    def add(self, n):
        self.now["added"] += n

    def finish(self):
        pass

    def stop(self):
        pass


def test_progress_totals_where_the_crm_gives_them(config, amo_sandbox, b24_sandbox):
    cfg = runtime.load_config(config)
    seen = {}
    for src in cfg.sources:
        rec = Recorder()
        assert jobs.run_job(cfg, src, progress=rec).status == "ok"
        seen.update(rec.streams)
    assert seen["amo/deals"]["step"] == "5/11" and seen["amo/deals"]["unit"] == "deals"
    assert all(s["expected"] == 0 for k, s in seen.items() if k.startswith("amo/"))  # none said
    # Bitrix24: the plan's ID range and density estimate a full read's size closely
    for stream in ("deals", "calls", "stage_history"):
        s = seen[f"b24/{stream}"]
        assert s["added"] > 0 and abs(s["expected"] - s["added"]) <= 0.1 * s["added"], (stream, s)
    assert seen["b24/stage_history"]["unit"] == "stage_changes"
