"""The mirror in Datasette: `demo` leaves a metadata file beside the mirror, Datasette (a real
`datasette serve` process, opened as the demo says) shows a deal's links to its contact,
company, manager, pipeline and stage, a task's and a call's to their client, and each link
opens the row it names; the canned queries run."""

from __future__ import annotations

import html
import os
import re
import shlex
import socket
import sqlite3
import subprocess
import sys
import time

import pytest
import requests
from datasette.utils import tilde_encode

from adapters import registry


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The demo's mirror and metadata, served by Datasette: (base URL, database name, mirror)."""
    workdir = tmp_path_factory.mktemp("demo")
    proc = subprocess.run(
        [sys.executable, "-m", "connector", "demo", "--size", "120", "--dir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    command = shlex.split(re.search(r"^  (datasette .*)$", proc.stdout, re.M).group(1))
    mirror, metadata = command[1], command[3]
    assert command[2] == "-m" and os.path.dirname(metadata) == str(workdir)
    port = _free_port()
    log = open(workdir / "datasette.log", "w+b")  # a file: a pipe nobody reads could fill and stall it
    server = subprocess.Popen(
        [sys.executable, "-m", "datasette", "serve", *command[1:], "-h", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:  # until it answers (it takes a second or two to start)
            try:
                requests.get(f"{base}/-/versions.json", timeout=5).raise_for_status()
                break
            except requests.ConnectionError:
                assert server.poll() is None, (workdir / "datasette.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "datasette did not start"
                time.sleep(0.1)
        yield base, os.path.splitext(os.path.basename(mirror))[0], mirror
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


def _one(mirror: str, sql: str, *args) -> dict:
    conn = sqlite3.connect(mirror)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute(sql, args).fetchone()
    finally:
        conn.close()
    assert row is not None, sql
    return dict(row)


def _follow(base: str, db: str, page: str, table: str, key: str, label: str) -> dict:
    """The link on `page` to the `table` row `key`, shown as `label`; the row it opens."""
    href = f"/{db}/{table}/{tilde_encode(key)}"
    shown = f'<a href="{href}">{html.escape(label)}</a>&nbsp;<em>{html.escape(key)}</em>'
    assert shown in page, (table, key, label)
    got = requests.get(f"{base}{href}.json", timeout=10)
    got.raise_for_status()
    doc = got.json()
    [row] = doc["rows"]
    return dict(zip(doc["columns"], row))


@pytest.mark.parametrize("source", registry.kinds())
def test_a_deal_row_links_to_its_contact_company_manager_pipeline_and_stage(served, source):
    base, db, mirror = served
    deal = _one(
        mirror,
        """SELECT d.key, c.key AS contact, c.name AS contact_name, co.key AS company,
                  co.name AS company_name, u.key AS user, u.name AS user_name,
                  p.key AS pipeline, p.name AS pipeline_name, s.key AS stage, s.name AS stage_name,
                  s.id AS stage_id
           FROM deals d
           JOIN contacts c ON c.source = d.source AND c.id = d.contact_id
           JOIN companies co ON co.source = d.source AND co.id = d.company_id
           JOIN users u ON u.source = d.source AND u.id = d.responsible_user_id
           JOIN pipelines p ON p.source = d.source AND p.id = d.pipeline_id
           JOIN stages s ON s.source = d.source AND s.pipeline_id = d.pipeline_id AND s.id = d.stage_id
           WHERE d.source = ? AND d.status = 'won' ORDER BY d.id LIMIT 1""",
        source,
    )
    # the deal's row in the table view (Datasette's row page shows no outgoing links)
    page = requests.get(f"{base}/{db}/deals", params={"key": deal["key"]}, timeout=10)
    page.raise_for_status()
    labels = requests.get(
        f"{base}/{db}/deals.json", params={"key": deal["key"], "_labels": "on", "_shape": "array"}, timeout=10
    ).json()
    assert labels[0]["contact_key"] == {"value": deal["contact"], "label": deal["contact_name"]}
    assert labels[0]["stage_key"] == {"value": deal["stage"], "label": deal["stage_name"]}
    for table, key, label in (
        ("contacts", deal["contact"], deal["contact_name"]),
        ("companies", deal["company"], deal["company_name"]),
        ("users", deal["user"], deal["user_name"]),
        ("pipelines", deal["pipeline"], deal["pipeline_name"]),
        ("stages", deal["stage"], deal["stage_name"]),
    ):
        row = _follow(base, db, page.text, table, key, label)
        assert row["key"] == key and row["source"] == source
    assert str(_follow(base, db, page.text, "stages", deal["stage"], deal["stage_name"])["id"]) == str(
        deal["stage_id"]
    )
    # the contact's page counts the deals pointing at it
    back = requests.get(
        f"{base}/{db}/contacts/{tilde_encode(deal['contact'])}.json?_extras=foreign_key_tables", timeout=10
    ).json()["foreign_key_tables"]
    assert any(fk["other_table"] == "deals" and fk["count"] >= 1 for fk in back), back


@pytest.mark.parametrize("source", registry.kinds())
@pytest.mark.parametrize("table", ["tasks", "calls"])
def test_a_task_and_a_call_link_to_their_client(served, source, table):
    base, db, mirror = served
    for kind, target in (("contact", "contacts"), ("deal", "deals"), ("company", "companies")):
        row = _one(
            mirror,
            f"""SELECT t.id AS own, x.key AS client, x.name AS label FROM
                  (SELECT source, id, entity_id FROM [{table}]
                   WHERE source = ? AND entity_type = ? ORDER BY id LIMIT 1) t
                JOIN [{target}] x ON x.source = t.source AND x.id = t.entity_id""",
            source,
            kind,
        )
        page = requests.get(f"{base}/{db}/{table}", params={"source": source, "id": row["own"]}, timeout=10)
        page.raise_for_status()
        assert _follow(base, db, page.text, target, row["client"], row["label"])["key"] == row["client"]


def test_metadata_describes_tables_and_its_canned_queries_run(served):
    base, db, _ = served
    meta = requests.get(f"{base}/-/metadata.json", timeout=10).json()
    deals = meta["databases"][db]["tables"]["deals"]
    assert "final" in deals["columns"]["closed_at"] and "contacts" in deals["columns"]["contact_key"]
    rows = {}
    for query in ("funnel", "manager_league", "churn", "lapsed_clients"):
        got = requests.get(f"{base}/{db}/{query}.json?_shape=array&since=&days=", timeout=30)
        assert got.status_code == 200, (query, got.text[:500])
        rows[query] = got.json()
    assert {r["source"] for r in rows["funnel"]} == set(registry.kinds())
    assert sum(r["deals_now"] for r in rows["funnel"]) > 0
    assert all(r["won"] + r["lost"] > 0 for r in rows["manager_league"]) and rows["manager_league"]
    assert rows["churn"] and all(r["active_clients"] is not None for r in rows["churn"])


def test_every_time_column_is_iso_8601_utc_text(served):
    """Datasette and Metabase read the time columns as dates: ISO 8601 UTC text, every one."""
    _, _, mirror = served
    iso = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
    conn = sqlite3.connect(mirror)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        checked = 0
        for t in tables:
            for col in [r[1] for r in conn.execute(f"PRAGMA table_info([{t}])") if r[1].endswith("_at")]:
                values = [
                    v
                    for (v,) in conn.execute(f"SELECT DISTINCT [{col}] FROM [{t}] WHERE [{col}] IS NOT NULL")
                ]
                bad = [v for v in values if not (isinstance(v, str) and iso.match(v))]
                assert not bad, (t, col, bad[:3])
                checked += len(values)
    finally:
        conn.close()
    assert checked > 1000
