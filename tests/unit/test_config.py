"""Config loading: every problem is one line naming the file and key; exit code 2 at the CLI."""

import dataclasses

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.config import loader as config
from connector.config.loader import ConfigError

GOOD = """
[storage]
path = "{db}"

[[sources]]
name = "main"
kind = "amocrm"
base_url = "https://example.amocrm.ru"
access_token = "${{AMO_TOKEN}}"

[[sources]]
name = "b24"
kind = "bitrix24"
webhook_url = "https://portal.bitrix24.ru/rest/1/s3cretwebhook/"

[schedule]
timezone = "Europe/Moscow"
sync = "0 2 * * *"

[kpi]
churn_days = 120

[kpi.currency_rates]
usd = 90

[kpi.fields]
win_rate = "KPI: Win rate, %"
calls_90d = {{ contact = "KPI: Calls", company = "KPI: Company calls" }}
"""


def write(tmp_path, text, name="config.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("AMO_TOKEN", "amo-token-value-123")


def good(tmp_path):
    return GOOD.format(db=tmp_path / "m.db")


def test_good_config_loads_with_env_substitution(tmp_path, env):
    cfg = config.load(write(tmp_path, good(tmp_path)))
    main_src, b24 = cfg.sources
    assert main_src.access_token == "amo-token-value-123"
    assert main_src.requests_per_second == 7.0
    assert b24.requests_per_second == 2.0 and b24.bucket_size == 50
    assert cfg.kpi.churn_days == 120
    assert cfg.kpi.currency_rates == {"USD": 90.0}
    assert cfg.kpi.fields["win_rate"] == {"contact": "KPI: Win rate, %", "company": "KPI: Win rate, %"}
    assert cfg.kpi.fields["calls_90d"]["company"] == "KPI: Company calls"
    assert cfg.schedule.timezone == "Europe/Moscow"
    assert "amo-token-value-123" not in repr(cfg)


def test_each_crm_key_reads_as_an_attribute_with_its_default(tmp_path, env):
    main_src, b24 = config.load(write(tmp_path, good(tmp_path))).sources
    assert (main_src.base_url, main_src.client_id, main_src.redirect_uri) == (
        "https://example.amocrm.ru",
        None,
        None,
    )
    assert (b24.webhook_url, b24.portal_url, b24.oauth_url) == (
        "https://portal.bitrix24.ru/rest/1/s3cretwebhook/",
        None,
        "https://oauth.bitrix.info/oauth/token/",
    )
    assert (b24.bucket_size, b24.operating_budget_s, b24.reconcile_hours) == (50, 480.0, 24.0)
    # Bitrix24's max_workers is a ceiling for its throttle: the bucket's burst by default
    assert (
        b24.timeout_s,
        b24.overlap_minutes,
        b24.max_workers,
        b24.currency,
        b24.streams,
        b24.verify_tls,
    ) == (60.0, 5.0, 50, "RUB", None, True)
    assert main_src.max_workers == 4
    assert main_src.parallel_streams == 8  # streams side by side unless the config says 1
    with pytest.raises(AttributeError, match="bitrix24 source has no key 'base_url'"):
        b24.base_url
    built = config.SourceConfig(name="b24", kind="bitrix24", webhook_url=b24.webhook_url)
    assert built == b24 and "s3cretwebhook" not in repr(built)
    assert dataclasses.replace(built, bucket_size=10).options == {**b24.options, "bucket_size": 10}


def test_example_config_is_valid(monkeypatch):
    monkeypatch.setenv("AMO_TOKEN", "t0ken-example")
    monkeypatch.setenv("B24_WEBHOOK", "https://portal.bitrix24.ru/rest/1/abcdef/")
    cfg = config.load("config.example.toml")
    assert [s.name for s in cfg.sources] == ["main", "b24"]


@pytest.mark.parametrize(
    "edit, key, problem",
    [
        (
            lambda t: t.replace('kind = "amocrm"', 'kind = "amocrm"\ncolour = "red"'),
            "sources[0].colour",
            "unknown key",
        ),
        (
            lambda t: t.replace('access_token = "${AMO_TOKEN}"\n', ""),
            "sources[0] (main).client_id",
            "missing credential",
        ),
        (
            lambda t: t.replace("https://example.amocrm.ru", "ftp://example.amocrm.ru"),
            "sources[0] (main).base_url",
            "not an http(s) URL",
        ),
        (
            lambda t: t.replace("https://example.amocrm.ru", "http://example.amocrm.ru"),
            "sources[0] (main).base_url",
            "must use https://",
        ),
        (
            lambda t: t.replace('name = "b24"', 'name = "main"'),
            "sources[1].name",
            "duplicate source name 'main'",
        ),
        (
            lambda t: t.replace('kind = "bitrix24"', 'kind = "salesforce"'),
            "sources[1] (b24).kind",
            "unknown kind 'salesforce'",
        ),
        (
            lambda t: t.replace("churn_days = 120", 'churn_days = "soon"'),
            "kpi.churn_days",
            "must be an integer, got a string",
        ),
        (
            lambda t: t.replace('sync = "0 2 * * *"', 'sync = "every night"'),
            "schedule.sync",
            "bad cron expression",
        ),
        (
            lambda t: t.replace(
                "https://portal.bitrix24.ru/rest/1/s3cretwebhook/", "https://portal.bitrix24.ru/"
            ),
            "sources[1] (b24).webhook_url",
            "must look like",
        ),
        (
            lambda t: t.replace('timezone = "Europe/Moscow"', 'timezone = "Mars/Olympus"'),
            "schedule.timezone",
            "unknown time zone",
        ),
        (
            lambda t: t.replace("${AMO_TOKEN}", "${NOT_SET_ANYWHERE}"),
            "sources[0].access_token",
            "environment variable NOT_SET_ANYWHERE is not set",
        ),
        (lambda t: t.replace("[kpi]", '[kpi]\ntargets = ["deal"]'), "kpi.targets", "unknown target 'deal'"),
        (lambda t: t.replace("usd = 90", "usd = -1"), "kpi.currency_rates.usd", "must be a positive number"),
        (lambda t: t.replace('name = "b24"', 'name = "b 24"'), "sources[1] (b 24).name", "use letters"),
        (
            lambda t: t.replace('kind = "amocrm"', 'kind = "amocrm"\nportal_url = "https://p.bitrix24.ru"'),
            "sources[0] (main).portal_url",
            "is a Bitrix24 key; this source is amocrm",
        ),
        (
            lambda t: t.replace('kind = "bitrix24"', 'kind = "bitrix24"\nbase_url = "https://x.amocrm.ru"'),
            "sources[1] (b24).base_url",
            "is an amoCRM key; this source is bitrix24",
        ),
        (
            lambda t: t.replace('kind = "bitrix24"', 'kind = "bitrix24"\nredirect_uri = "http://x.ru/oauth"'),
            "sources[1] (b24).redirect_uri",
            "must use https://",
        ),
        (
            lambda t: t.replace('kind = "bitrix24"', 'kind = "bitrix24"\nbucket_size = 0'),
            "sources[1] (b24).bucket_size",
            "must be greater than 0",
        ),
        (
            lambda t: t.replace('kind = "bitrix24"', 'kind = "bitrix24"\nreconcile_hours = "daily"'),
            "sources[1].reconcile_hours",
            "must be a number, got a string",
        ),
        (
            lambda t: t.replace('kind = "bitrix24"', 'kind = "bitrix24"\nmax_workers = 0'),
            "sources[1] (b24).max_workers",
            "must be greater than 0",
        ),
        (
            lambda t: t.replace('kind = "bitrix24"', 'kind = "bitrix24"\nparallel_streams = 0'),
            "sources[1] (b24).parallel_streams",
            "must be greater than 0",
        ),
        (
            lambda t: t.replace('kind = "bitrix24"', 'kind = "bitrix24"\nparallel_streams = 2.5'),
            "sources[1].parallel_streams",
            "must be an integer",
        ),
    ],
)
def test_each_config_error_names_file_and_key(tmp_path, env, edit, key, problem):
    path = write(tmp_path, edit(good(tmp_path)))
    with pytest.raises(ConfigError) as err:
        config.load(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert problem in message
    assert "\n" not in message


def test_webhook_secret_never_in_error(tmp_path, env):
    text = good(tmp_path).replace(
        "https://portal.bitrix24.ru/rest/1/s3cretwebhook/", "http://portal.bitrix24.ru/rest/1/s3cretwebhook/"
    )
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, text))
    assert "s3cretwebhook" not in str(err.value)
    assert "webhook_url" in str(err.value)


def test_not_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(write(tmp_path, "[storage\npath="))
    with pytest.raises(ConfigError, match="file not found"):
        config.load(str(tmp_path / "nope.toml"))


def test_http_allowed_for_loopback(tmp_path, env):
    text = good(tmp_path).replace("https://example.amocrm.ru", "http://127.0.0.1:8080")
    assert config.load(write(tmp_path, text)).sources[0].base_url == "http://127.0.0.1:8080"


def test_cli_config_error_exits_2_with_one_line(tmp_path, env):
    path = write(tmp_path, good(tmp_path).replace('kind = "bitrix24"', 'kind = "sap"'))
    for args in (["check"], ["sync"], ["status"]):
        result = CliRunner().invoke(main, ["--config", path, *args])
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}: sources[1] (b24).kind")
        assert "Traceback" not in result.output


def test_config_from_environment_variable(tmp_path, env, monkeypatch):
    path = write(tmp_path, good(tmp_path))
    monkeypatch.setenv("CRM_CONNECTOR_CONFIG", path)
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 0, result.output
    assert "no sync has run yet" in result.output


def test_unknown_source_is_usage_error(tmp_path, env):
    path = write(tmp_path, good(tmp_path))
    result = CliRunner().invoke(main, ["--config", path, "sync", "--source", "nope"])
    assert result.exit_code == 2
    assert "no source named 'nope'" in result.output
