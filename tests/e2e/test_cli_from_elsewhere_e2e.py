"""The CLI as cron runs it, against both sandboxes: a config naming its mirror relatively, used
from another folder; JSON-only stdout with `--log-format json`; `check` within the terminal;
one progress line across the streams."""

from __future__ import annotations

import io
import json
import re

from click.testing import CliRunner
from rich.console import Console

from connector.cli import main
from connector.run import jobs, runtime
from connector.run.progress import Progress


def write_app(tmp_path, amo, b24) -> str:
    app = tmp_path / "app"
    app.mkdir()
    (app / "config.toml").write_text(f"""
[storage]
path = "mirror.db"

[[sources]]
name = "amo"
kind = "amocrm"
base_url = "{amo.url}"
access_token = "{amo.access_token}"

[[sources]]
name = "b24"
kind = "bitrix24"
webhook_url = "{b24.webhook_url}"
""")
    return "app/config.toml"


def cli(*args, columns=200):
    return CliRunner().invoke(main, list(args), env={"COLUMNS": str(columns)})


def test_sync_and_check_from_another_folder(tmp_path, monkeypatch, amo_sandbox, b24_sandbox):
    config = write_app(tmp_path, amo_sandbox, b24_sandbox)
    monkeypatch.chdir(tmp_path)  # cron's folder, not the config's
    mirror = tmp_path / "app" / "mirror.db"

    res = cli("--config", config, "--log-format", "json", "sync")
    assert res.exit_code == 0, res.output
    summaries = [json.loads(line) for line in res.stdout.splitlines()]  # stdout: JSON lines only
    assert [(s["event"], s["source"]) for s in summaries] == [
        ("sync_summary", "amo"),
        ("sync_summary", "b24"),
    ]
    assert all(s["streams_ok"] == s["streams"] and s["rows"] > 0 and s["not_ok"] == {} for s in summaries)
    assert all(json.loads(line) for line in res.stderr.splitlines())  # and the log lines are JSON
    assert mirror.exists() and not (tmp_path / "mirror.db").exists()

    res = cli("--config", config, "check", columns=60)
    assert res.exit_code == 0, res.output
    first, *lines = res.stdout.splitlines()
    assert first == f"Mirror: {mirror}"
    assert max(len(line) for line in lines) <= 60, res.stdout
    assert any(line.startswith("amo ") and " deals " in line and " ok" in line for line in lines)

    res = cli("--config", config, "--log-format", "json", "run", "--once")  # the daemon's one pass
    assert res.exit_code == 0, res.output
    runs = [json.loads(line) for line in res.stdout.splitlines()]
    assert [(r["event"], r["source"], r["status"]) for r in runs] == [
        ("run_summary", "amo", "ok"),
        ("run_summary", "b24", "ok"),
    ]

    res = cli("--config", config, "--log-format", "json", "check")
    doc = json.loads(res.stdout)  # the JSON document, as with --json
    assert doc["ok"] is True and doc["mirrors"] == [
        {"path": str(mirror), "sources": ["amo", "b24"], "exists": True}
    ]


class Frames(Progress):
    """The progress line as it reads after each page, on a terminal console of its own."""

    def __init__(self):
        super().__init__(Console(file=io.StringIO(), force_terminal=True, width=160))
        self.frames: list[tuple[str, str]] = []

    def add(self, entities: int) -> None:
        super().add(entities)
        self.frames.append((self.stream.label, self.text()))


def parts(texts: list[str], stream: str) -> list[str]:
    """One stream's words in each line: streams side by side share it ("deals ... | calls ...")."""
    out = []
    for text in texts:
        text = re.sub(r" · \d+:\d\d in all$", "", text)
        if " | " not in text and not text.startswith(f"{stream} "):
            out.append(text)  # the stream alone on the line
            continue
        mine = [p for p in text.split(" | ") if p.startswith(f"{stream} ")]
        assert len(mine) == 1, text
        out.append(mine[0].removeprefix(f"{stream} "))
    return out


def test_one_progress_line_with_totals_or_pages_and_requests(tmp_path, monkeypatch, amo_sandbox, b24_sandbox):
    cfg = runtime.load_config(str(tmp_path / write_app(tmp_path, amo_sandbox, b24_sandbox)))
    seen: dict[str, list[str]] = {}
    for src in cfg.sources:
        frames = Frames()
        assert jobs.run_job(cfg, src, progress=frames).status == "ok"
        for label, text in frames.frames:
            seen.setdefault(label, []).append(text)
    # Bitrix24 estimates its totals: count of the total, rate and time left
    assert all(" of ~" in part and " left" in part for part in parts(seen["b24/deals"], "deals"))
    # amoCRM gives none: pages and requests, so a stream that finds nothing for a while still moves
    amo = parts(seen["amo/deals"], "deals")
    assert re.search(r"^[\d,]+ deals · [\d,]+/s · \d+ pages? · \d+ requests?\b", amo[-1]), amo[-1]
    pages = [int(re.search(r"(\d+) pages?", t).group(1)) for t in amo]
    assert pages == list(range(1, len(pages) + 1))
    assert not [t for ts in seen.values() for t in ts if t.startswith("0 ") and "/s" in t]  # no "0 calls 0/s"


def test_read_only_commands_run_without_the_secrets_after_a_real_sync(tmp_path, monkeypatch, amo_sandbox):
    (tmp_path / "config.toml").write_text(f"""
[storage]
path = "mirror.db"

[[sources]]
name = "amo"
kind = "amocrm"
base_url = "{amo_sandbox.url}"
access_token = "${{CRM_TEST_AMO_TOKEN}}"

[kpi.fields]
last_interaction_on = "Last interaction on"
days_since_last_purchase = "Days since the last purchase"

[notify]
urls = ["tgram://${{CRM_TEST_TG_TOKEN}}/1"]
""")
    config = str(tmp_path / "config.toml")
    monkeypatch.setenv("CRM_TEST_AMO_TOKEN", amo_sandbox.access_token)
    monkeypatch.setenv("CRM_TEST_TG_TOKEN", "tg-secret")
    assert cli("--config", config, "sync").exit_code == 0
    res = cli("--config", config, "check")
    assert res.exit_code == 0, res.output
    assert "warning: " in res.stderr and "map last_purchase_on instead" in res.stderr  # the day count
    assert "last_interaction_on" not in res.stderr
    assert cli("--config", config, "kpi").exit_code == 0
    contact = next(c["id"] for c in amo_sandbox.dataset.contacts if not c["is_deleted"])

    monkeypatch.delenv("CRM_TEST_AMO_TOKEN")  # cron's environment for the read-only commands
    monkeypatch.delenv("CRM_TEST_TG_TOKEN")
    assert cli("--config", config, "status").exit_code == 0
    res = cli("--config", config, "kpi", "show", "amo", "contact", str(contact))
    assert res.exit_code == 0 and "last_interaction_on" in res.output, res.output
    assert re.search(r"last_interaction_on\s+\d{4}-\d\d-\d\d ", res.output), res.output  # a date
    res = cli("--config", config, "report")
    assert res.exit_code == 0 and (tmp_path / "crm-report.html").exists(), res.output
    res = cli("--config", config, "sync")  # what reaches the CRM still needs its token
    assert res.exit_code == 2 and "environment variable CRM_TEST_AMO_TOKEN is not set" in res.output
