"""Faults on both CRMs, against the sandboxes and through the CLI.

- A refused port on 127.0.0.1: `sync` makes two attempts, logs one line per source naming
  the host, the port and the cause, does not attempt the other streams, exits 1; `check` says
  the same in its table after two attempts. (DNS failures: tests/unit/test_http_faults.py,
  with a mocked resolver; no test touches the internet.)
- A 200 whose body is cut short or is an HTML page is retried like a 502: the stream completes.
- A full sync with 10% injected faults of every kind ends with every stream ok and the mirror
  equal, table by table, to a clean run's.
"""

from __future__ import annotations

import socket
import sqlite3

import pytest
from click.testing import CliRunner

from adapters.amocrm.adapter import AmoCrmAdapter
from adapters.bitrix24.adapter import Bitrix24Adapter
from connector.cli import main
from connector.config.loader import SourceConfig
from connector.mirror.store import Mirror
from connector.mirror.tokens import TokenStore
from connector.run.sync import sync_source
from sandbox.httpbase import FAULT_KINDS

TABLES = (
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
)


@pytest.fixture(autouse=True)
def short_pauses(monkeypatch):
    """The retry ladder as it is, with its pauses shrunk: tests count attempts, not seconds."""
    monkeypatch.setattr("adapters.http.FIRST_BACKOFF_S", 0.001)


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def amo_adapter(srv, tmp_path) -> AmoCrmAdapter:
    return AmoCrmAdapter(
        SourceConfig(
            name="amo",
            kind="amocrm",
            base_url=srv.url,
            access_token=srv.access_token,
            requests_per_second=500.0,
            max_workers=4,
        ),
        TokenStore(str(tmp_path / "tokens.json")),
    )


def b24_adapter(srv, _tmp_path) -> Bitrix24Adapter:
    return Bitrix24Adapter(
        SourceConfig(name="b24", kind="bitrix24", webhook_url=srv.webhook_url, requests_per_second=500.0),
        None,
    )


CRMS = {"amo": ("amo_sandbox", amo_adapter), "b24": ("b24_sandbox", b24_adapter)}


def snapshot(db: str) -> dict:
    with sqlite3.connect(db) as conn:
        return {t: sorted(map(repr, conn.execute(f"SELECT * FROM [{t}]").fetchall())) for t in TABLES}


# -- a host that cannot be reached -------------------------------------------------------------


@pytest.fixture
def dead_config(tmp_path):
    port = dead_port()
    path = tmp_path / "config.toml"
    path.write_text(f"""
[storage]
path = "{tmp_path / "mirror.db"}"

[[sources]]
name = "amo"
kind = "amocrm"
base_url = "http://127.0.0.1:{port}"
access_token = "long-lived-token-123456"

[[sources]]
name = "b24"
kind = "bitrix24"
webhook_url = "http://127.0.0.1:{port}/rest/1/webhooksecret123/"
""")
    return str(path), port


def test_sync_against_a_refused_port_is_one_line_per_source_and_two_attempts(dead_config, tmp_path):
    path, port = dead_config
    result = CliRunner().invoke(main, ["--config", path, "sync"])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 2, result.stderr  # one line per source, not one per stream
    for line, crm in zip(errors, ("amoCRM source 'amo'", "Bitrix24 source 'b24'")):
        assert f"error={crm}: cannot reach 127.0.0.1 port {port}: connection refused (2 attempts)" in line
        assert line.endswith("the source's other streams are not run")
    assert "webhooksecret123" not in result.output
    for name, streams in (("amo", 11), ("b24", 11)):
        assert (
            f"{name}: 0 rows, 2 requests, 0/{streams} streams ok (failed: users; not run: "
            f"{streams - 1} streams)"
        ) in result.stdout
    with sqlite3.connect(str(tmp_path / "mirror.db")) as conn:
        runs = conn.execute("SELECT source, requests, error FROM sync_runs ORDER BY id").fetchall()
    attempted = [r for r in runs if not r[2].startswith("not run:")]
    assert [(r[0], r[1]) for r in attempted] == [("amo", 2), ("b24", 2)]
    assert len(runs) == 22 and sum(r[1] for r in runs) == 4


def test_check_against_a_refused_port_names_host_and_cause(dead_config):
    path, port = dead_config
    result = CliRunner().invoke(main, ["--config", path, "check"])
    assert result.exit_code == 1
    failed = [line for line in result.stdout.splitlines() if "FAILED" in line]
    assert len(failed) == 2
    assert all(
        f"cannot reach 127.0.0.1 port {port}: connection refused (2 attempts)" in line for line in failed
    )


def test_an_untrusted_certificate_is_a_tls_failure_tried_once(amo_dataset, tmp_path):
    from sandbox.amocrm import AmoSandbox

    with AmoSandbox(amo_dataset, limits=False, https=True) as srv:  # self-signed, not trusted
        adapter = amo_adapter(srv, tmp_path)
        with Mirror(str(tmp_path / "m.db")) as mirror:
            results = sync_source(mirror, adapter)
        adapter.close()
    assert results[0].error.startswith(
        f"amoCRM source 'amo': cannot reach 127.0.0.1 port {srv.port}: TLS handshake failed ("
    )
    assert "(1 attempt)" in results[0].error and "certificate" in results[0].error
    assert [r.requests for r in results] == [1] + [0] * (len(results) - 1)
    assert all(r.error.startswith("not run: ") for r in results[1:])


# -- 200s that are not JSON, and 10% faults -----------------------------------------------------


@pytest.mark.parametrize("fault", ["truncated", "badjson", "html"])
@pytest.mark.parametrize("crm", ["amo", "b24"])
def test_a_bad_200_is_retried_and_the_stream_completes(crm, fault, request, tmp_path):
    fixture, make = CRMS[crm]
    srv = request.getfixturevalue(fixture)
    adapter = make(srv, tmp_path)
    with Mirror(str(tmp_path / "m.db")) as mirror:
        srv.clear_log()
        srv.fail_next(fault)
        results = sync_source(mirror, adapter, streams=["users"])
        assert [r.status for r in results] == ["ok"], results[0].error
        first, retry = srv.request_log[:2]
        assert first["fault"] == fault and first["status"] == 200
        assert retry["fault"] is None and retry["path"] == first["path"]
        assert results[0].requests == len(srv.request_log) == 2
        assert mirror.conn.execute("SELECT count(*) FROM users").fetchone()[0] > 0
    adapter.close()


@pytest.mark.parametrize("crm", ["amo", "b24"])
def test_ten_percent_faults_end_with_the_same_mirror_as_a_clean_run(crm, request, tmp_path):
    fixture, make = CRMS[crm]
    srv = request.getfixturevalue(fixture)
    clean, faulty = str(tmp_path / "clean.db"), str(tmp_path / "faulty.db")
    for db, rate in ((clean, 0.0), (faulty, 0.1)):
        srv.fault_rate, srv.faults, srv.timeout_hold_s = rate, FAULT_KINDS, 0.05
        srv.clear_log()
        adapter = make(srv, tmp_path)
        with Mirror(db) as mirror:
            results = sync_source(mirror, adapter)
        adapter.close()
        assert [r.status for r in results] == ["ok"] * len(results), [
            (r.stream, r.error) for r in results if r.status != "ok"
        ]
    kinds = {r["fault"] for r in srv.request_log if r["fault"]}
    assert len(kinds) >= 3, kinds  # the run met several kinds of fault, and rode them out
    assert snapshot(faulty) == snapshot(clean)
