"""A generated set of malformed configs, each run through the real CLI (`check`).

Every one must be refused before anything runs: exit 2, exactly one line
`error: <path>: <key>: <problem>` that names the key (or the line, for bytes and syntax), and no
traceback. Nothing here reaches a CRM: `check`'s call is stubbed, so a
config that slipped through would exit 0 and fail its case.
"""

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.run import jobs

BASE = """
[storage]
path = "{db}"
# STORAGE

[[sources]]
name = "main"
kind = "amocrm"
base_url = "https://example.amocrm.ru"
access_token = "${{AMO_TOKEN}}"
# SRC0

[[sources]]
name = "b24"
kind = "bitrix24"
webhook_url = "https://portal.bitrix24.ru/rest/1/s3cretwebhook/"
# SRC1

[schedule]
timezone = "Europe/Moscow"
sync = "0 2 * * *"
# SCHEDULE

[kpi]
churn_days = 120
# KPI

[kpi.currency_rates]
usd = 90

[kpi.fields]
win_rate = "KPI: Win rate, %"
# FIELDS

# TOP
"""


def add(marker: str, line: str):
    return lambda t: t.replace(f"# {marker}\n", line + "\n", 1)


def sub(old: str, new: str):
    def edit(t):
        assert old in t, old
        return t.replace(old, new, 1)

    return edit


CASES: list[tuple[str, object, str, dict]] = []  # (id, edit, text the error line must hold, env)


def case(id_, edit, key, env=None):
    CASES.append((id_, edit, key, env or {}))


# -- numbers: wrong type, not finite, negative, zero where a count or time must be positive, huge
FLOAT_BAD = ["-1", "inf", "-inf", "nan", "1e9", '"10"', "true", "[]"]
INT_BAD = ["-1", "1000000000", "1.5", "inf", "nan", '"4"', "false", "{}"]
NUMBERS = [  # (marker, key, bad values, zero refused)
    ("SRC0", "requests_per_second", FLOAT_BAD + ["1e-9"], True),
    ("SRC0", "timeout_s", FLOAT_BAD, True),
    ("SRC0", "overlap_minutes", FLOAT_BAD, False),
    ("SRC0", "max_workers", INT_BAD + ["51"], True),
    ("SRC1", "requests_per_second", FLOAT_BAD, True),
    ("SRC1", "timeout_s", FLOAT_BAD, True),
    ("SRC1", "overlap_minutes", FLOAT_BAD, False),
    ("SRC1", "max_workers", INT_BAD, True),
    ("SRC1", "bucket_size", INT_BAD, True),
    ("SRC1", "operating_budget_s", FLOAT_BAD, True),
    ("SRC1", "reconcile_hours", FLOAT_BAD, False),
    ("SCHEDULE", "misfire_grace_s", INT_BAD, False),
    ("SCHEDULE", "lock_timeout_s", FLOAT_BAD, False),
    ("KPI", "calls_days", INT_BAD, True),
    ("KPI", "precision", INT_BAD, False),
]
for marker, key, bad, zero in NUMBERS:
    for v in bad + (["0"] if zero else []):
        case(f"{marker}.{key}={v}", add(marker, f"{key} = {v}"), key)
for v in ["-1", "0", "1000000", "nan", '"soon"']:
    case(f"kpi.churn_days={v}", sub("churn_days = 120", f"churn_days = {v}"), "churn_days")
for v in ["-1", "0", "inf", "nan", '"90"']:
    case(f"currency_rates.usd={v}", sub("usd = 90", f"usd = {v}"), "currency_rates.usd")

# -- URLs: spaces, bad host or port, an API path in a base URL, wrong scheme
AMO_URL = "https://example.amocrm.ru"
for v in [
    "https://exa mple.amocrm.ru",
    "https://[::1",
    "https://example.amocrm.ru:99999",
    "https://example.amocrm.ru:0",
    "https://example.amocrm.ru:abc",
    "https://example.amocrm.ru/api/v4",
    "https://example.amocrm.ru/api/v4/leads",
    "https://example.amocrm.ru?page=1",
    "ftp://example.amocrm.ru",
    "http://example.amocrm.ru",
    "",
    "example.amocrm.ru",
    "https://",
    "https://exa_mple.amocrm.ru",
    "https://-x.amocrm.ru",
    " https://example.amocrm.ru",
    "https://example.amocrm.ru\\t",
    "https://example..amocrm.ru",
]:
    case(f"base_url={v}", sub(f'base_url = "{AMO_URL}"', f'base_url = "{v}"'), "base_url")
HOOK = "https://portal.bitrix24.ru/rest/1/s3cretwebhook/"
for v in [
    "https://portal.bitrix24.ru/rest/1/ s3cret/",
    "https://portal.bitrix24.ru:99999/rest/1/s3cret/",
    "https://[::1/rest/1/s3cret/",
    "https://portal.bitrix24.ru/",
    "https://portal.bitrix24.ru/rest/x/s3cret/",
    "http://portal.bitrix24.ru/rest/1/s3cret/",
    "portal.bitrix24.ru/rest/1/s3cret/",
]:
    case(f"webhook_url={v}", sub(f'webhook_url = "{HOOK}"', f'webhook_url = "{v}"'), "webhook_url")
for v in [
    "https://portal.bitrix24.ru/rest/1/s3cretwebhook/crm.deal.list.json",
    "https://portal.bitrix24.ru/rest/1/s3cretwebhook/profile",
    "https://portal.bitrix24.ru/rest/1/s3cretwebhook/?start=50",
    "https://portal.bitrix24.ru/rest/1/s3cretwebhook?auth=x",
    "https://portal.bitrix24.ru/rest/1/s3cretwebhook/#top",
]:
    case(
        f"webhook_url with more after the secret: {v}",
        sub(f'webhook_url = "{HOOK}"', f'webhook_url = "{v}"'),
        "webhook_url",
    )
OAUTH = 'portal_url = "https://portal.bitrix24.ru"\nclient_id = "app"\nclient_secret = "s3cretsecret"'
for key, line in [
    ("portal_url", OAUTH.replace("bitrix24.ru", "bitrix24.ru/rest")),
    ("portal_url", OAUTH.replace("portal.bitrix24.ru", "portal bitrix24.ru")),
    ("portal_url", OAUTH.replace("bitrix24.ru", "bitrix24.ru:70000")),
    ("oauth_url", OAUTH + '\noauth_url = "oauth.bitrix.info"'),
    ("oauth_url", OAUTH + '\noauth_url = "https://oauth .bitrix.info/oauth/token/"'),
    ("redirect_uri", OAUTH + '\nredirect_uri = "https://[::1/cb"'),
    ("client_secret", OAUTH.replace('client_secret = "s3cretsecret"', "")),
]:
    case(f"oauth-{key}-{len(CASES)}", sub(f'webhook_url = "{HOOK}"', line), key)

# -- streams: names the CRM does not declare, empty, repeated, wrong type
for marker in ("SRC0", "SRC1"):
    for v in ['["deal"]', '["Deals"]', "[]", "[1]", '["deals", "deals"]', '"deals"', '[""]']:
        case(f"{marker}.streams={v}", add(marker, f"streams = {v}"), "streams")

# -- cron text that does not parse or never fires; time zones
for key in ("sync", "incremental"):
    for v in [
        "0 2 30 2 *",
        "0 2 31 4 *",
        "0 2 31 2,4,6,9,11 *",
        "61 * * * *",
        "* * *",
        "*/0 * * * *",
        "0 2 * * 9",
        "",
        "0 25 * * *",
        "0 2 * 13 *",
        "every night",
        "0 2 * * mon-fri-sat",
    ]:
        edit = (
            sub('sync = "0 2 * * *"', f'sync = "{v}"')
            if key == "sync"
            else add("SCHEDULE", f'incremental = "{v}"')
        )
        case(f"schedule.{key}={v}", edit, f"schedule.{key}")
for v in ["Mars/Olympus", "", "../../etc/passwd", "Europe/Moscow "]:
    case(f"timezone={v}", sub('timezone = "Europe/Moscow"', f'timezone = "{v}"'), "timezone")

# -- names, kinds and other source keys
for v in ["MAIN", "Main", "", "b 24", "b/24"]:
    case(f"name={v}", sub('name = "b24"', f'name = "{v}"'), "name")
case("name=5", sub('name = "b24"', "name = 5"), "name")
for v in ['""', '"salesforce"', "1"]:
    case(f"kind={v}", sub('kind = "bitrix24"', f"kind = {v}"), "kind")
for v in ['"RUBLE"', '""', '"R1B"', "5"]:
    case(f"currency={v}", add("SRC1", f"currency = {v}"), "currency")
for v in ['"yes"', "1"]:
    case(f"verify_tls={v}", add("SRC0", f"verify_tls = {v}"), "verify_tls")
case("unknown source key", add("SRC0", 'colour = "red"'), "colour")
case("amo key on b24", add("SRC1", 'base_url = "https://x.amocrm.ru"'), "base_url")
case("no credentials", sub('access_token = "${AMO_TOKEN}"\n', ""), "client_id")
case("empty AMO_TOKEN", lambda t: t, "AMO_TOKEN", {"AMO_TOKEN": ""})
case("unset variable", sub("${AMO_TOKEN}", "${NOT_SET_ANYWHERE}"), "NOT_SET_ANYWHERE")

# -- notify, storage, top level
for v in ["[123456]", '[""]', '"tgram://x/y"', "[[1]]", "[true]"]:
    case(f"notify.urls={v}", add("TOP", f"[notify]\nurls = {v}"), "notify.urls")
case("notify.on_success", add("TOP", '[notify]\non_success = "yes"'), "notify.on_success")
case("notify unknown", add("TOP", '[notify]\nemail = "a@b"'), "notify.email")
for key, v in [
    ("path", '""'),
    ("path", '"   "'),
    ("path", "1"),
    ("path", '"a\\u0000b"'),
    ("token_path", '""'),
    ("token_path", "[]"),
    ("colour", '"red"'),
]:
    if key == "path":
        edit = (
            lambda v: (
                lambda t: t.replace(
                    t[t.index('path = "') : t.index("\n", t.index('path = "'))], f"path = {v}", 1
                )
            )
        )(v)
    else:
        edit = add("STORAGE", f"{key} = {v}")
    case(f"storage.{key}={v}", edit, f"storage.{key}")
case("top unknown key", add("TOP", "[colour]\nred = 1"), "colour")


def no_sources(replacement: str):
    """The config with its [[sources]] blocks replaced by `replacement`, at the top level."""
    return lambda t: replacement + "\n" + t[: t.index("[[sources]]")] + t[t.index("[schedule]") :]


case("sources empty", no_sources("sources = []"), "sources")
case("no sources", no_sources(""), "sources")
case("sources not tables", no_sources("sources = [1]"), "sources[0]")
case("sources a table", no_sources('sources = { name = "x" }'), "sources")

# -- [kpi] and [kpi.fields]: unknown KPIs (typos), empty or wrong field names, targets
for v in ["winrate", "revenue", "win_rates", "deals_wonn", "nps"]:
    case(f"kpi.fields.{v}", add("FIELDS", f'{v} = "KPI: x"'), f"kpi.fields.{v}")
for v in ['""', "1", "{}", '{ lead = "x" }', '{ contact = "" }', '["a"]', '"  "']:
    case(
        f"kpi.fields.win_rate={v}",
        sub('win_rate = "KPI: Win rate, %"', f"win_rate = {v}"),
        "kpi.fields.win_rate",
    )
for v in ['["deal"]', '"contact"', "[1]"]:
    case(f"kpi.targets={v}", add("KPI", f"targets = {v}"), "kpi.targets")
case("kpi unknown", add("KPI", "colour = 1"), "kpi.colour")
CUSTOM = '[[kpi.custom]]\nname = "big"\ntarget = "contact"\nsql = "SELECT contact_id, 1 FROM deal_contacts"\n'
for key, edit in [
    ("sql", CUSTOM.replace('sql = "SELECT contact_id, 1 FROM deal_contacts"\n', "")),
    ("sql", CUSTOM.replace("SELECT contact_id, 1", "SELEC contact_id, 1")),
    ("sql", CUSTOM.replace("SELECT contact_id, 1 FROM deal_contacts", "DELETE FROM deals")),
    ("sql", CUSTOM.replace("contact_id, 1", "contact_id, 1, 2")),
    ("name", CUSTOM.replace('"big"', '"Big-Deals"')),
    ("target", CUSTOM.replace('target = "contact"', 'target = "deal"')),
    ("name", CUSTOM + "\n" + CUSTOM),
]:
    case(f"kpi.custom.{key}-{len(CASES)}", add("TOP", edit), key)

# -- bytes and syntax
case("non-UTF-8 byte", sub('name = "main"', 'name = "ma\udcffin"'), "line 7")
case(
    "latin-1 file",
    sub("currency_rates]", "currency_rates]\n# Pr\u00e9f\u00e9rences"),
    "line",
    {"_latin1": "1"},
)
case("TOML syntax", sub("[kpi]", "[kpi"), "line")
for depth in (600, 5000):
    case(
        f"arrays nested {depth} deep", add("TOP", "deep = " + "[" * depth + "]" * depth), "nested too deeply"
    )
    case(
        f"tables nested {depth} deep",
        add("TOP", "deep = " + "{a = " * depth + "}" * depth),
        "nested too deeply",
    )
case("UTF-8 byte order mark", lambda t: "\ufeff" + t, "byte order mark")
case("duplicate key", add("SRC0", 'base_url = "https://other.amocrm.ru"'), "line")


@pytest.fixture
def no_crm(monkeypatch):
    """`check`'s call to the CRM, stubbed: a config that got through exits 0 without network."""
    monkeypatch.setattr(jobs, "check_source", lambda cfg, src: "ok (stub)")
    monkeypatch.setenv("AMO_TOKEN", "amo-token-value-123")
    monkeypatch.delenv("CRM_CONNECTOR_CONFIG", raising=False)


def test_the_set_is_large():
    assert len(CASES) >= 150 and len({c[0] for c in CASES}) == len(CASES)


def test_the_base_config_passes(tmp_path, no_crm):
    path = tmp_path / "config.toml"
    path.write_text(BASE.format(db=tmp_path / "m.db"))
    r = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("id_, edit, key, env", CASES, ids=[c[0] for c in CASES])
def test_malformed_config_is_one_line_exit_2(tmp_path, no_crm, monkeypatch, id_, edit, key, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    path = tmp_path / "config.toml"
    text = edit(BASE.format(db=tmp_path / "m.db"))
    path.write_bytes(
        text.encode("latin-1") if env.get("_latin1") else text.encode("utf-8", "surrogateescape")
    )
    r = CliRunner().invoke(main, ["check", "--config", str(path)])
    lines = r.output.splitlines()
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit), (
        r.output,
        r.exception,
    )
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), r.output
    assert key in lines[0], lines[0]
