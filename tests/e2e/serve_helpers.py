"""What the `crm-connector serve` end-to-end tests share: the CLI as a real process, `serve`
started and stopped as a subprocess, a config signed in and synced against a sandbox, waits
that poll with deadlines, the JSON log, the cards' values in a sandbox dataset, the mirror
read-only, and every Bitrix24 call and batch sub-call in a sandbox's request log."""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from urllib.parse import parse_qsl

import pytest
import requests

from sandbox.bitrix24 import Bitrix24Sandbox

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONNECTOR = [sys.executable, "-m", "connector"]
ENV = dict(os.environ, PYTHONPATH=ROOT)
FIELDS = {"deals_won": "KPI: Deals won", "revenue_won": "KPI: Lifetime revenue"}


def hook_config(tmp, port: int, source: str, secret: str, debounce_s: float) -> str:
    """A config of one source named "crm" (`source`: its kind and credentials, as TOML lines)
    with webhooks on, `serve` on 127.0.0.1:`port`, and the FIELDS mapped on both card types."""
    fields = "\n".join(f'{k} = "{v}"' for k, v in FIELDS.items())
    return f"""
[storage]
path = "{tmp / "mirror.db"}"
token_path = "{tmp / "tokens.json"}"

[[sources]]
name = "crm"
{source}
webhook_secret = "{secret}"

[webhooks]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
debounce_s = {debounce_s}

[kpi]
targets = ["contact", "company"]

[kpi.fields]
{fields}
"""


def amo_source(amo) -> str:
    """The TOML lines of an amoCRM source on the sandbox `amo` (its long-lived token)."""
    return f"""kind = "amocrm"
base_url = "{amo.url}"
access_token = "{amo.access_token}"
"""


def b24_source(srv, extra: str = "") -> str:
    """The TOML lines of a Bitrix24 source on the sandbox `srv`, signing in as its OAuth app
    (with its events' `application_token`), then `extra` lines."""
    return f"""kind = "bitrix24"
portal_url = "{srv.url}"
client_id = "sandbox.app"
client_secret = "sandbox-secret"
oauth_url = "{srv.oauth_url}"
application_token = "{srv.application_token}"
{extra}"""


def synced_config(tmp, port: int, srv, secret: str, debounce_s: float, extra: str = ""):
    """`tmp`/config.toml (`hook_config`) for the sandbox `srv`, amoCRM or Bitrix24 (`extra`:
    more Bitrix24 source lines); signed in (Bitrix24: `auth --code`) and synced once
    (`run --once`). Returns its path."""
    config = tmp / "config.toml"
    if isinstance(srv, Bitrix24Sandbox):
        config.write_text(hook_config(tmp, port, b24_source(srv, extra), secret, debounce_s))
        cli(config, "auth", "crm", "--code", srv.issue_code())
    else:
        assert not extra, "extra source lines are for Bitrix24"
        config.write_text(hook_config(tmp, port, amo_source(srv), secret, debounce_s))
    cli(config, "run", "--once")
    return config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(config, *args, check=True) -> subprocess.CompletedProcess:
    out = subprocess.run(
        CONNECTOR + ["--config", str(config), *args], capture_output=True, text=True, timeout=300, env=ENV
    )
    if check:
        assert out.returncode == 0, out.stdout[-1000:] + out.stderr[-2000:]
    return out


def start(config, *args, log=None) -> subprocess.Popen:
    """The CLI as a background process; its stderr (the log) into the file `log`."""
    err = open(log, "w") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            CONNECTOR + ["--config", str(config), "--log-format", "json", *args],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
    finally:
        if log:
            err.close()  # the child holds its own copy


def wait_for(pred, what: str, deadline_s: float = 10.0, proc=None):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        if proc is not None:
            assert proc.poll() is None, f"serve exited early (rc {proc.returncode}) waiting for {what}"
        time.sleep(0.02)  # polling interval, not a timing assumption
    pytest.fail(f"timed out after {deadline_s:g}s waiting for {what}")


def up(base: str) -> bool:
    try:
        return requests.get(base + "/health", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


@contextmanager
def serving(config, port: int, log):
    """`serve` running (answering /health); stopped with SIGTERM at the end, which must exit 0."""
    proc = start(config, "serve", log=log)
    try:
        wait_for(lambda: up(f"http://127.0.0.1:{port}"), "serve to listen", 30, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            assert proc.wait(30) == 0, open(log).read()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()


def logged(path, event: str) -> list[dict]:
    """The JSON log lines of `event` (refresh, job, ...) written so far."""
    lines = []
    for line in open(path).read().splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if doc.get("event") == event:
            lines.append(doc)
    return lines


def amo_deal_reads(amo, deal_id: int, since: int = 0) -> list[float]:
    """When amoCRM requests read deal `deal_id` by id (`filter[id]`, as a refresh does)."""
    out = []
    for r in amo.request_log[since:]:
        if r["path"] != "/api/v4/leads":
            continue
        ids = [v for k, v in (r.get("params") or {}).items() if BY_ID.fullmatch(k)]
        if str(deal_id) in [str(x) for v in ids for x in (v if isinstance(v, list) else [v])]:
            out.append(r["at"])
    return out


def card_value(ds, entity_type: str, entity_id: int, label: str):
    """A card's custom value as the CRM keeps it (None before the field exists or is set)."""
    fid = next((f["id"] for f in ds.fields[entity_type] if f["name"] == label), None)
    row = ds.by_id("contacts" if entity_type == "contact" else "companies")[entity_id]
    return None if fid is None else row["custom"].get(fid)


def won_stage(ds, deal) -> int:
    pipeline = next(p for p in ds.pipelines if p["id"] == deal["pipeline_id"])
    return next(s["id"] for s in pipeline["stages"] if s["semantics"] == "won")


def open_deals(ds, n: int) -> list[dict]:
    """`n` open deals with an amount, each the only deal of this list on its single contact."""
    out, seen = [], set()
    for d in ds.deals:
        if (
            d["status"] == "open"
            and not d["is_deleted"]
            and len(d["contact_ids"]) == 1
            and (d.get("amount") or 0) > 0
            and d["contact_ids"][0] not in seen
        ):
            out.append(d)
            seen.add(d["contact_ids"][0])
            if len(out) == n:
                return out
    raise AssertionError(f"the dataset has only {len(out)} such deals, {n} wanted")


def mirror_rows(db, sql: str, *args) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


# ---- Bitrix24: every call and batch sub-call in the request log ----------------------------


def _flat(prefix: str, value) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _flat(f"{prefix}[{k}]" if prefix else str(k), v)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _flat(f"{prefix}[{i}]", v)]
    return [(prefix, str(value))]


def b24_calls(srv, since: int = 0) -> list[tuple[int, str, list[tuple[str, str]]]]:
    """(request index, method, flat params) for each method run: a plain call, or each
    sub-call of a batch, from the `since`th request of the sandbox's log on."""
    out = []
    for i, r in enumerate(list(srv.request_log)[since:], since):
        method = r["path"].rsplit("/", 1)[-1].lower().removesuffix(".json")
        params = r.get("params") or {}
        if method != "batch":
            out.append((i, method, _flat("", params)))
            continue
        cmd = params.get("cmd") or {}
        for text in cmd.values() if isinstance(cmd, dict) else cmd:
            sub, _, query = str(text).partition("?")
            out.append((i, sub.strip().lower().removesuffix(".json"), parse_qsl(query)))
    return out


BY_ID = re.compile(r"filter\[[@=]?id\](\[\d*\])?", re.IGNORECASE)


def b24_deal_reads(srv, deal_id: int, since: int = 0) -> list[int]:
    """The request index of each call or sub-call that read deal `deal_id` by id
    (`crm.deal.list` filtered on it, `crm.deal.get`)."""
    out = []
    for i, method, params in b24_calls(srv, since):
        if method == "crm.deal.get":
            hit = any(k.lower() == "id" and v == str(deal_id) for k, v in params)
        elif method == "crm.deal.list":  # filter[@ID][n] or filter[ID], not >ID windows
            hit = any(BY_ID.fullmatch(k) and v == str(deal_id) for k, v in params)
        else:
            hit = False
        if hit:
            out.append(i)
    return out


def b24_reads_of_deal(srv, deal_id: int, since: int = 0) -> int:
    return len(b24_deal_reads(srv, deal_id, since))


def b24_card_writes(srv, entity_type: str, entity_id: int, since: int = 0) -> int:
    """`crm.contact.update` / `crm.company.update` calls and sub-calls for that card."""
    return sum(
        method == f"crm.{entity_type}.update" and ("id", str(entity_id)) in params
        for _, method, params in b24_calls(srv, since)
    )
