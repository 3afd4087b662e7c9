"""The Datasette metadata file: every table and column described, canned queries that run on
a mirror; `datasette-metadata` writes it beside any mirror, reading it only."""

from __future__ import annotations

import json
import os
import sqlite3

from click.testing import CliRunner

from connector.cli import main
from connector.mirror import datasette, keys
from connector.mirror.store import Mirror


def test_the_metadata_describes_every_table_and_column(tmp_path):
    with Mirror(str(tmp_path / "m.db")) as m:
        names = [r[0] for r in m.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        columns = {
            t: [r[1] for r in m.conn.execute(f"PRAGMA table_xinfo([{t}])")]
            for t in names
            if t != "sqlite_sequence"
        }
    doc = datasette.metadata("m", columns)
    tables = doc["databases"]["m"]["tables"]
    missing = {
        t: [c for c in cols if c not in tables.get(t, {}).get("columns", {})] for t, cols in columns.items()
    }
    assert not {t: c for t, c in missing.items() if c}
    assert all(tables[t]["description"] for t in columns)
    assert set(doc["databases"]["m"]["queries"]) >= {"funnel", "manager_league", "churn"}
    # a link shows a name: every table a link points at has its label column
    for t in keys.KEYS:
        assert tables[t]["label_column"] in columns[t], t


def test_datasette_metadata_command_writes_the_file_beside_any_mirror(tmp_path):
    path = str(tmp_path / "shop.db")
    Mirror(path).close()
    out = CliRunner().invoke(main, ["datasette-metadata", "--mirror", path])
    assert out.exit_code == 0, out.output
    written = str(tmp_path / "shop.metadata.json")
    assert f"datasette {path} -m {written}" in out.output
    doc = json.load(open(written, encoding="utf-8"))
    assert doc["databases"]["shop"]["tables"]["deals"]["columns"]["stage_key"].startswith("Link to `stages`")
    # its queries run on the mirror
    with sqlite3.connect(path) as conn:
        for q in doc["databases"]["shop"]["queries"].values():
            conn.execute(q["sql"], {"since": "", "days": ""}).fetchall()
    missing = CliRunner().invoke(main, ["datasette-metadata", "--mirror", str(tmp_path / "none.db")])
    assert missing.exit_code == 2 and "none.db: no such file" in missing.output
    assert not os.path.exists(tmp_path / "none.db")


PER_SOURCE = """
[storage]
path = "{dir}/mirrors/{{source}}.db"

[[sources]]
name = "east"
kind = "amocrm"
base_url = "http://127.0.0.1:9"
access_token = "tok-east"

[[sources]]
name = "west"
kind = "amocrm"
base_url = "http://127.0.0.1:9"
access_token = "tok-west"
"""


def test_one_metadata_file_per_mirror_of_the_config(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(PER_SOURCE.format(dir=tmp_path))
    for name in ("east", "west"):
        Mirror(str(tmp_path / "mirrors" / f"{name}.db")).close()
    out = CliRunner().invoke(main, ["--config", str(config), "datasette-metadata"])
    assert out.exit_code == 0, out.output
    for name in ("east", "west"):
        doc = json.load(open(tmp_path / "mirrors" / f"{name}.metadata.json", encoding="utf-8"))
        assert set(doc["databases"]) == {name}
    one = CliRunner().invoke(main, ["--config", str(config), "datasette-metadata", "--out", "x.json"])
    assert one.exit_code == 2 and "one mirror per source" in one.output


def test_metadata_needs_no_secrets_and_keeps_json_logs_json(tmp_path, monkeypatch):
    """It reads only the mirror: a config whose tokens are unset still works, and with
    `--log-format json` stdout carries one JSON line per mirror."""
    monkeypatch.delenv("EAST_TOKEN", raising=False)
    config = tmp_path / "config.toml"
    config.write_text(
        PER_SOURCE.format(dir=tmp_path).replace('access_token = "tok-east"', 'access_token = "${EAST_TOKEN}"')
    )
    for name in ("east", "west"):
        Mirror(str(tmp_path / "mirrors" / f"{name}.db")).close()
    out = CliRunner().invoke(main, ["--config", str(config), "--log-format", "json", "datasette-metadata"])
    assert out.exit_code == 0, out.output
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["event"] for line in lines] == ["datasette_metadata"] * 2
    assert {os.path.basename(line["metadata"]) for line in lines} == {
        "east.metadata.json",
        "west.metadata.json",
    }
