"""`crm-connector sync`, `status` and `kpi` end to end against both sandboxes on 127.0.0.1.

Checks the mirror's rows against the sandbox data, that a second run with no changes makes at
most one request per stream and leaves the mirror identical, that a bad page fails only its
stream, and that no secret reaches the output, the logs or the mirror's tables.
"""

import json
import os
import sqlite3
import stat

import pytest
from click.testing import CliRunner

from connector.cli import main

ENTITY_TABLES = [
    "users",
    "pipelines",
    "stages",
    "deals",
    "deal_contacts",
    "leads",
    "contacts",
    "companies",
    "tasks",
    "calls",
    "stage_changes",
    "activities",
    "survey_answers",
]


@pytest.fixture
def config_path(tmp_path, amo_sandbox, b24_sandbox):
    path = tmp_path / "config.toml"
    path.write_text(f"""
[storage]
path = "{tmp_path / "mirror.db"}"

[[sources]]
name = "amo"
kind = "amocrm"
base_url = "{amo_sandbox.url}"
access_token = "${{E2E_AMO_TOKEN}}"

[[sources]]
name = "b24"
kind = "bitrix24"
webhook_url = "${{E2E_B24_WEBHOOK}}"

[kpi.fields]
win_rate = "KPI: Win rate, %"
revenue_won = "KPI: Lifetime revenue"
""")
    os.environ["E2E_AMO_TOKEN"] = amo_sandbox.access_token
    os.environ["E2E_B24_WEBHOOK"] = b24_sandbox.webhook_url
    yield str(path)
    os.environ.pop("E2E_AMO_TOKEN")
    os.environ.pop("E2E_B24_WEBHOOK")


def cli(config_path, *args):
    result = CliRunner().invoke(main, ["--config", config_path, "-v", *args])
    return result.exit_code, result.output


def dump(db_path) -> dict:
    conn = sqlite3.connect(db_path)
    try:
        return {t: sorted(map(repr, conn.execute(f"SELECT * FROM {t}").fetchall())) for t in ENTITY_TABLES}
    finally:
        conn.close()


def live(rows):
    return {r["id"] for r in rows if not r.get("is_deleted")}


def test_sync_twice_then_kpi_on_both_crms(config_path, tmp_path, amo_sandbox, b24_sandbox):
    code, out = cli(config_path, "sync")
    assert code == 0, out
    db = str(tmp_path / "mirror.db")
    conn = sqlite3.connect(db)
    for source, server in (("amo", amo_sandbox), ("b24", b24_sandbox)):
        ds = server.dataset
        for table in ("deals", "contacts", "companies", "tasks"):
            mirrored = {
                r[0]
                for r in conn.execute(
                    f"SELECT id FROM {table} WHERE source = ? AND is_deleted = 0", (source,)
                )
            }
            assert mirrored == live(getattr(ds, table)), (source, table)
        calls = conn.execute("SELECT count(*) FROM calls WHERE source = ?", (source,)).fetchone()[0]
        assert calls == len(ds.calls)
        won = conn.execute(
            "SELECT count(*) FROM deals WHERE source = ? AND status = 'won' AND is_deleted = 0", (source,)
        ).fetchone()[0]
        assert won == sum(1 for d in ds.deals if d["status"] == "won" and not d["is_deleted"])
    conn.close()
    before = dump(db)

    amo_sandbox.clear_log()
    b24_sandbox.clear_log()
    code, out = cli(config_path, "sync")
    assert code == 0, out
    assert dump(db) == before
    with sqlite3.connect(db) as conn:
        streams = dict(
            conn.execute("SELECT source, count(DISTINCT stream) FROM sync_runs GROUP BY source").fetchall()
        )
    assert len(amo_sandbox.request_log) <= streams["amo"]
    assert len(b24_sandbox.request_log) <= streams["b24"]

    code, out = cli(config_path, "status")
    assert code == 0 and "deals" in out and "Next scheduled runs" in out

    code, out = cli(config_path, "kpi")
    assert code == 0, out
    code, out = cli(config_path, "kpi", "--dry-run")
    assert code == 0, out
    with sqlite3.connect(db) as conn:
        written = conn.execute("SELECT count(*) FROM writeback_log WHERE status = 'ok'").fetchone()[0]
    assert written > 0


def test_bad_page_fails_its_stream_only_and_keeps_the_rest(config_path, tmp_path, amo_sandbox, monkeypatch):
    monkeypatch.setattr("adapters.http.FIRST_BACKOFF_S", 0.001)  # the ladder, not its pauses
    amo_sandbox.fail_next("badjson", 6)  # every attempt at the first request: the users stream
    code, out = cli(config_path, "sync", "--source", "amo")
    assert code == 1
    failed = [line for line in out.splitlines() if "status=failed" in line]
    assert len(failed) == 1 and "source=amo stream=users" in failed[0], out  # said once
    assert "10/11 streams ok (failed: users)" in out
    with sqlite3.connect(str(tmp_path / "mirror.db")) as conn:
        runs = dict(conn.execute("SELECT stream, status FROM sync_runs WHERE source = 'amo'").fetchall())
        error = conn.execute("SELECT error FROM sync_runs WHERE stream = 'users'").fetchone()[0]
        deals = conn.execute("SELECT count(*) FROM deals").fetchone()[0]
    assert runs.pop("users") == "failed" and set(runs.values()) == {"ok"}
    assert error and "users" in error
    assert deals == len(live(amo_sandbox.dataset.deals))


def test_secrets_never_in_output_logs_or_mirror(config_path, tmp_path, amo_sandbox, b24_sandbox, caplog):
    secrets = [amo_sandbox.access_token, b24_sandbox.webhook_url, b24_sandbox.webhook_secret]
    amo_sandbox.fail_next("500", 1)
    outputs = []
    for args in (["check"], ["sync"], ["--log-format", "json", "sync", "--full"], ["status"], ["kpi"]):
        outputs.append(cli(config_path, *args)[1])
    text = "\n".join(outputs) + caplog.text
    db = tmp_path / "mirror.db"
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    conn = sqlite3.connect(str(db))
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    mirror_text = json.dumps(
        {t: conn.execute(f"SELECT * FROM [{t}]").fetchall() for t in tables}, default=str
    )
    conn.close()
    assert "deals" in mirror_text
    assert "sync source=amo stream=deals" in outputs[1]  # the logs are part of what we checked
    assert '"event": "sync"' in outputs[2]
    for secret in secrets:
        assert secret not in text
        assert secret not in mirror_text
