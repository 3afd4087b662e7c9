"""A third CRM needs only its folder and a registry line: config, adapter and write-back find it.

`LEDGER` stands in for that folder (its keys, check, defaults, adapter and field codes); the
registry line is `monkeypatch.setitem(registry.CRMS, ...)`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapters import redact, registry
from adapters.base import CrmField
from adapters.crm import Crm
from connector.config import loader as config
from connector.config.kpi import KpiConfig
from connector.config.loader import ConfigError, SourceConfig
from connector.kpi import engine as kpi
from connector.kpi import writeback
from connector.run import runtime
from tests.fakes import FakeAdapter
from tests.unit.test_kpi import NOW, S, build_mirror


def check(key: str, d: dict, fail) -> None:
    """Ledger's own check: an account and an API key."""
    for k in ("account", "api_key"):
        if not d.get(k):
            raise fail(f"{key}.{k}", "is required")
    d["account"] = d["account"].lower()


class LedgerAdapter(FakeAdapter):
    """Ledger keys a KPI's field `ldg:<code>`."""

    kind = "ledger"
    prefix = "ldg:"

    def __init__(self, source, tokens):
        super().__init__(source.name)
        self.cfg, self.tokens = source, tokens


class LedgerStream:
    def __init__(self, name):
        self.name = name


LEDGER_STREAMS = [LedgerStream("invoices"), LedgerStream("payments")]

LEDGER = Crm(
    kind="ledger",
    title="Ledger CRM",
    keys={"account": str, "api_key": str, "page_size": int},
    check=check,
    secret_keys=("api_key",),
    defaults={"page_size": 100, "requests_per_second": 3.0},
    adapter=f"{__name__}:LedgerAdapter",
    sandbox=f"{__name__}:LedgerAdapter",
    sandbox_source=lambda server: {"account": "sandbox", "api_key": "sandbox-key"},
    field_has_code=lambda f, code: f.key == "ldg:" + code,
    streams=f"{__name__}:LEDGER_STREAMS",
)

BLOCK = """
[storage]
path = "{db}"

[[sources]]
name = "books"
kind = "ledger"
account = "ACME"
api_key = "${{LEDGER_KEY}}"
{extra}
"""


@pytest.fixture(autouse=True)
def ledger(monkeypatch):
    monkeypatch.setitem(registry.CRMS, "ledger", LEDGER)
    monkeypatch.setenv("LEDGER_KEY", "ledger-secret-key-42")


def load(tmp_path, extra: str = "", block: str = BLOCK):
    path = tmp_path / "config.toml"
    path.write_text(block.format(db=tmp_path / "m.db", extra=extra))
    return config.load(str(path)), str(path)


def error(tmp_path, extra: str = "", block: str = BLOCK) -> str:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, extra, block)
    return str(err.value)


def test_its_keys_load_with_its_check_defaults_and_secrets(tmp_path):
    cfg, _ = load(tmp_path)
    src = cfg.source("books")
    assert (src.kind, src.account, src.api_key) == ("ledger", "acme", "ledger-secret-key-42")
    assert (src.page_size, src.requests_per_second, src.timeout_s) == (100, 3.0, 60.0)
    assert src.options == {"account": "acme", "api_key": "ledger-secret-key-42", "page_size": 100}
    assert "ledger-secret-key-42" not in repr(src)
    assert redact.redact("key ledger-secret-key-42") == "key ***"


def test_runtime_builds_its_adapter(tmp_path):
    cfg, _ = load(tmp_path, "page_size = 20")
    adapter = runtime.make_adapter(cfg, cfg.source("books"))
    assert isinstance(adapter, LedgerAdapter)
    assert adapter.cfg.page_size == 20 and adapter.tokens.path == cfg.token_path


@pytest.mark.parametrize(
    "extra, key, problem",
    [
        ('colour = "red"', "sources[0].colour", "unknown key (expected one of: access_token, account, "),
        ('page_size = "big"', "sources[0].page_size", "must be an integer, got a string"),
        (
            'base_url = "https://x.amocrm.ru"',
            "sources[0] (books).base_url",
            "is an amoCRM key; this source is ledger",
        ),
        (
            'client_id = "app"',
            "sources[0] (books).client_id",
            "is an amoCRM or Bitrix24 key; this source is ledger",
        ),
        ("timeout_s = 0", "sources[0] (books).timeout_s", "must be greater than 0"),
    ],
)
def test_keys_it_does_not_take_are_rejected(tmp_path, extra, key, problem):
    path = str(tmp_path / "config.toml")
    assert error(tmp_path, extra).startswith(f"{path}: {key}: {problem}")


def test_its_check_runs(tmp_path):
    path = str(tmp_path / "config.toml")
    block = BLOCK.replace('account = "ACME"\n', "")
    assert error(tmp_path, block=block) == f"{path}: sources[0] (books).account: is required"


def test_its_keys_are_named_in_other_crms_errors_and_its_kind_in_unknown_kinds(tmp_path):
    path = str(tmp_path / "config.toml")
    amo = BLOCK.replace('kind = "ledger"', 'kind = "amocrm"\nbase_url = "https://x.amocrm.ru"')
    assert (
        error(tmp_path, block=amo)
        == f"{path}: sources[0] (books).account: is a Ledger CRM key; this source is amocrm"
    )
    sap = BLOCK.replace('kind = "ledger"', 'kind = "sap"')
    assert (
        error(tmp_path, block=sap)
        == f"{path}: sources[0] (books).kind: unknown kind 'sap' (expected amocrm, bitrix24 or ledger)"
    )


def test_source_config_built_in_code_takes_its_keys():
    src = SourceConfig(name="books", kind="ledger", api_key="k" * 8, account="acme")
    assert (src.page_size, src.requests_per_second) == (100, 3.0)
    with pytest.raises(TypeError, match="takes no key 'base_url'"):
        SourceConfig(name="books", kind="ledger", base_url="https://x.amocrm.ru")
    with pytest.raises(AttributeError):
        src.webhook_url


def test_write_back_matches_its_fields_by_its_field_code():
    mirror = build_mirror()
    kpi_cfg = KpiConfig(targets=["contact"], fields={"deals_won": {"contact": "KPI: Won"}})
    kpi.compute(mirror, S, kpi_cfg, now=NOW)
    theirs = CrmField(key="ldg:KPI_DEALS_WON", name="Deals won (renamed)", type="numeric")
    lookalike = CrmField(key="UF_CRM_KPI_DEALS_WON", name="Bitrix-style", type="numeric")
    adapter = LedgerAdapter(SourceConfig(name=S, kind="ledger"), None)
    adapter.fields["contact"] = [lookalike, theirs]
    rep = writeback.write_back(mirror, adapter, S, kpi_cfg)
    assert adapter.fields["contact"] == [lookalike, theirs]  # nothing created
    assert rep.values > 0 and {k for _, b in adapter.batches for w in b for k in w.values} == {
        "ldg:KPI_DEALS_WON"
    }
    mirror.close()


PLAIN = """
[[sources]]
name = "main"
kind = "amocrm"
base_url = "https://example.amocrm.ru"
access_token = "t0ken-123"

[schedule]
sync = "0 2 * * 1-5"

[[kpi.custom]]
name = "named"
target = "contact"
sql = "SELECT id, 1 FROM contacts"
"""


def test_config_imports_neither_the_scheduler_nor_the_kpi_engine(tmp_path):
    """Not on import, nor when checking [schedule] cron text and [[kpi.custom]] SQL."""
    path = tmp_path / "config.toml"
    path.write_text(PLAIN)
    code = (
        "import sys; from connector.config import loader as config; config.load(sys.argv[1]); "
        "print(sorted(m for m in ('connector.run.scheduler', 'connector.kpi.engine', 'connector.kpi.prep') "
        "if m in sys.modules))"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env)
    assert (out.returncode, out.stdout.strip()) == (0, "[]"), out.stderr


def test_its_stream_names_come_from_its_declarations(tmp_path):
    assert LEDGER.stream_names() == ("invoices", "payments")
    cfg, _ = load(tmp_path, 'streams = ["payments"]')
    assert cfg.source("books").streams == ["payments"]
    assert (
        "sources[0] (books).streams[0]: Ledger CRM has no stream 'invoice' (did you mean "
        "'invoices'?) (streams: invoices, payments)" in error(tmp_path, 'streams = ["invoice"]')
    )


def test_every_registered_crm_declares_its_streams():
    for kind in (k for k in registry.kinds() if k != "ledger"):
        names = registry.get(kind).stream_names()
        assert "deals" in names and len(set(names)) == len(names), kind
