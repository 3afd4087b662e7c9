"""kill -9 during write-back, on both CRMs: `crm-connector kpi` runs as a real
process against the sandbox and is killed at several points of its write requests:

- before the CRM applies the Nth write request (the request was sent; nothing changed);
- after the CRM applied it but before it answered (the process never learns the outcome);
- by the test, once the sandbox has answered N write requests (wherever the process then is).

After every kill, `writeback_log` matches the cards as read back through the sandbox's API:
every value on a card has a log row saying so (`ok`, or `sending` for the one request whose
answer was lost), and every `ok` row is on its card. The next run marks the lost request
`unknown`, sends again exactly the cards not logged `ok` (never one logged `ok`: counted from
the write requests the sandbox received), and at the end the cards equal `kpi_latest`.
"""

from __future__ import annotations

import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
import requests
from click.testing import CliRunner

from connector.cli import main
from connector.kpi import writeback
from sandbox.amocrm import AmoSandbox
from sandbox.bitrix24 import Bitrix24Sandbox
from sandbox.data import generate
from tests.fixtures_amocrm import all_pages

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = 900  # ~270 contacts and ~70 companies: 8 write requests of 50 cards
KPIS = ("deals_won", "deals_total", "revenue_won")  # none depends on the clock
TYPES = ("contact", "company")


# -- the two CRMs: start, source keys, which cards a request writes, reading cards back ------


class Amo:
    kind = "amocrm"

    def __init__(self):
        self.server = AmoSandbox(generate(seed=3, size=SIZE), limits=False).start()

    def source(self) -> str:
        return f'base_url = "{self.server.url}"\naccess_token = "{self.server.access_token}"'

    @staticmethod
    def written(req) -> list[tuple[str, int]]:
        if req.method != "PATCH":
            return []
        entity = {"contacts": "contact", "companies": "company"}[req.path.rstrip("/").split("/")[3]]
        return [(entity, int(card["id"])) for card in req.json()]

    def cards(self, keys: dict[str, dict[str, str]]) -> dict[tuple, float]:
        """(type, id, field key) -> the value the CRM shows, for every mapped field with one."""
        out, headers = {}, {"Authorization": f"Bearer {self.server.access_token}"}
        for et, path in (("contact", "/api/v4/contacts"), ("company", "/api/v4/companies")):
            items, _ = all_pages(self.server, path, headers, limit=250)
            wanted = set(keys[et].values())
            for item in items:
                for f in item.get("custom_fields_values") or []:
                    if str(f["field_id"]) in wanted and f["values"] and f["values"][0]["value"] != "":
                        out[(et, item["id"], str(f["field_id"]))] = float(f["values"][0]["value"])
        return out


class B24:
    kind = "bitrix24"
    UPDATE = re.compile(r"crm\.(contact|company)\.update\?id=(\d+)")

    def __init__(self):
        self.server = Bitrix24Sandbox(generate(seed=3, size=SIZE), limits=False, cost_model=False).start()

    def source(self) -> str:
        return f'webhook_url = "{self.server.webhook_url}"'

    @classmethod
    def written(cls, req) -> list[tuple[str, int]]:
        method = req.path.rstrip("/").split("/")[-1]
        if method == "batch":
            cmds = req.json()["cmd"].values()
            return [(m.group(1), int(m.group(2))) for c in cmds if (m := cls.UPDATE.match(c))]
        if method in ("crm.contact.update", "crm.company.update"):
            return [(method.split(".")[1], int(req.json()["id"]))]
        return []

    def cards(self, keys: dict[str, dict[str, str]]) -> dict[tuple, float]:
        out = {}
        for et in TYPES:
            ids = [
                c["id"]
                for c in getattr(self.server.dataset, "contacts" if et == "contact" else "companies")
                if not c.get("is_deleted")
            ]
            for eid in ids:
                r = requests.post(f"{self.server.webhook_url}crm.{et}.get", json={"id": eid}, timeout=10)
                r.raise_for_status()
                card = r.json()["result"]
                for key in keys[et].values():
                    if card.get(key) not in (None, ""):
                        out[(et, eid, key)] = float(card[key])
        return out


# -- the killer: a wrapper around the sandbox's request handler --------------------------------


class Killer:
    """Counts the write requests of the current run, remembers the cards each carried, and
    kills the process at the Nth: `before` the CRM applies it, or `after` (applied, unanswered)."""

    def __init__(self, crm):
        self.crm, self.lock = crm, threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.at, self.mode = 0, None
        self.writes: list[list[tuple[str, int]]] = []  # this run's write requests, answered or not
        self.answered = 0
        handle = crm.server.handle

        def wrapped(req):
            cards = crm.written(req)
            if not cards:
                return handle(req)
            with self.lock:
                self.writes.append(cards)
                n = len(self.writes)
            if self.mode == "before" and n == self.at:
                self._kill()
                return crm.server.fault_response()  # never applied; nobody is listening
            resp = handle(req)
            if self.mode == "after" and n == self.at:
                self._kill()
            with self.lock:
                self.answered += 1
            return resp

        crm.server.handle = wrapped

    def _kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def run(self, config: str, at: int = 0, mode: str | None = None) -> int:
        """`crm-connector kpi` as a process; killed at write request `at` (mode before, after
        or late: by this thread once `at` writes were answered); its exit code."""
        self.writes, self.answered, self.at, self.mode = [], 0, at, mode
        env = dict(os.environ, PYTHONPATH=ROOT)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "connector", "--config", config, "kpi"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            if mode == "late":
                end = time.monotonic() + 120
                while self.answered < at:
                    assert self.proc.poll() is None, "the run ended before it could be killed"
                    assert time.monotonic() < end, "timed out waiting for write requests"
                    time.sleep(0.001)  # polling interval, not a timing assumption
                self._kill()
            self.proc.wait(180)
            return self.proc.returncode
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def cards_sent(self) -> list[tuple[str, int]]:
        return [c for w in self.writes for c in w]


@pytest.fixture(params=[Amo, B24], ids=["amocrm", "bitrix24"])
def crm(request):
    crm = request.param()
    yield crm
    crm.server.stop()


# -- the mirror side ------------------------------------------------------------------------


def query(db: str, sql: str, *args) -> list:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def field_keys(db: str) -> dict[str, dict[str, str]]:
    keys = {et: {} for et in TYPES}
    for et, kpi, key in query(db, "SELECT entity_type, kpi, field_key FROM kpi_fields"):
        keys[et][kpi] = key
    return keys


def latest_log(db: str) -> dict[tuple, tuple]:
    """(type, id, field) -> (status, new_value) of the card's field's newest log row."""
    rows = query(db, "SELECT entity_type, entity_id, field, status, new_value FROM writeback_log ORDER BY id")
    return {(et, eid, f): (status, value) for et, eid, f, status, value in rows}


def assert_log_matches_cards(db: str, crm) -> dict[tuple, tuple]:
    """Every value on a card is logged (`ok`, or `sending`: the request whose answer was lost);
    every `ok` row is on its card; at most one request's cards are in doubt."""
    log, cards = latest_log(db), crm.cards(field_keys(db))
    for key, value in cards.items():
        assert key in log, f"{key} shows {value} on the card but has no writeback_log row"
        status, logged = log[key]
        assert status in ("ok", writeback.SENDING) and logged == pytest.approx(value), (key, log[key], value)
    for key, (status, logged) in log.items():
        if status == "ok":
            assert cards.get(key) == pytest.approx(logged), (key, logged, cards.get(key))
    in_doubt = {(et, eid) for (et, eid, _), (status, _) in log.items() if status == writeback.SENDING}
    assert len(in_doubt) <= writeback.PER_REQUEST
    return log


def written_ok(log: dict) -> set[tuple[str, int]]:
    return {(et, eid) for (et, eid, _), (status, _) in log.items() if status == "ok"}


def test_kill_9_during_write_back_leaves_the_log_matching_the_cards(crm, tmp_path):
    config = tmp_path / "config.toml"
    fields = "\n".join(f'{k} = "KPI: {k}"' for k in KPIS)
    config.write_text(f"""
[storage]
path = "{tmp_path / "mirror.db"}"

[[sources]]
name = "main"
kind = "{crm.kind}"
{crm.source()}

[kpi]
targets = ["contact", "company"]

[kpi.fields]
{fields}
""")
    db = str(tmp_path / "mirror.db")
    res = CliRunner().invoke(main, ["--config", str(config), "sync"])
    assert res.exit_code == 0, res.output
    killer = Killer(crm)

    sent, in_doubt = Counter(), Counter()  # per card: times sent, times left in doubt by a kill
    for at, mode in ((2, "after"), (1, "before"), (2, "late"), (3, "after")):
        before = written_ok(latest_log(db))
        assert killer.run(str(config), at, mode) == -signal.SIGKILL, killer.proc.stderr.read().decode()
        assert not set(killer.cards_sent()) & before, f"a card logged ok was sent again ({mode} {at})"
        sent.update(killer.cards_sent())
        log = assert_log_matches_cards(db, crm)
        doubt = {(et, eid) for (et, eid, _), (s, _) in log.items() if s == writeback.SENDING}
        in_doubt.update(doubt)
        if mode in ("before", "after"):  # exactly the request being answered when it died
            assert doubt == set(killer.writes[-1])

    # the run to the end sends exactly the cards not logged ok, in as few requests as possible
    log = latest_log(db)
    pending = {(et, eid) for (et, eid, _), (status, _) in log.items() if status != "ok"}
    assert killer.run(str(config)) == 0, killer.proc.stderr.read().decode()
    last = killer.cards_sent()
    assert len(last) == len(set(last)) and not set(last) & written_ok(log) and pending <= set(last)
    by_type = Counter(et for et, _ in last)
    assert len(killer.writes) == sum(math.ceil(n / writeback.PER_REQUEST) for n in by_type.values())
    sent.update(last)
    # over all runs a card went out once, plus at most once per request of it a kill cut short
    assert all(1 <= n <= 1 + in_doubt[card] for card, n in sent.items()), [
        (card, n, in_doubt[card]) for card, n in sent.items() if n > 1 + in_doubt[card]
    ]
    assert sum(in_doubt.values()) <= 4 * writeback.PER_REQUEST
    assert query(db, "SELECT count(*) FROM writeback_log WHERE status = ?", writeback.SENDING)[0][0] == 0
    assert query(db, "SELECT count(*) FROM writeback_log WHERE status = ?", writeback.UNKNOWN)[0][0] > 0

    # the cards equal kpi_latest, and the log's newest row of each card field says so
    keys = field_keys(db)
    expected = {
        (et, eid, keys[et][kpi]): round(value, 2)
        for et, eid, kpi, value in query(
            db,
            "SELECT l.entity_type, l.entity_id, l.kpi, l.value FROM kpi_latest l "
            "JOIN (SELECT 'contact' AS t, id FROM contacts WHERE is_deleted = 0 UNION ALL "
            "      SELECT 'company', id FROM companies WHERE is_deleted = 0) c "
            "  ON c.t = l.entity_type AND c.id = l.entity_id "
            "WHERE l.value IS NOT NULL AND l.kpi IN (%s)" % ",".join(f"'{k}'" for k in KPIS),
        )
    }
    cards = crm.cards(keys)
    assert cards == pytest.approx(expected)
    assert_log_matches_cards(db, crm)
    assert len(cards) > 200
