"""`[webhooks]` and `[[sources]] webhook_secret`: checked like every key, the secret never shown;
and each portal's limits split between the jobs and the refreshes."""

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.config import loader as config
from connector.config.loader import ConfigError
from connector.run import runtime

SECRET = "k3y_" + "a" * 40

BASE = """
[storage]
path = "{db}"

[[sources]]
name = "amo"
kind = "amocrm"
base_url = "https://example.amocrm.ru"
access_token = "t"
webhook_secret = "{secret}"

[[sources]]
name = "b24"
kind = "bitrix24"
webhook_url = "https://portal.bitrix24.ru/rest/1/s3cretwebhook/"
webhook_secret = "{secret}"

{extra}
"""


def write(tmp_path, extra="", secret=SECRET):
    path = tmp_path / "config.toml"
    path.write_text(BASE.format(db=tmp_path / "m.db", secret=secret, extra=extra))
    return str(path)


def test_defaults_and_a_full_section(tmp_path):
    cfg = config.load(write(tmp_path))
    assert (cfg.webhooks.listen, cfg.webhooks.debounce_s, cfg.webhooks.share) == (
        "127.0.0.1:8390",
        10.0,
        0.15,
    )
    cfg = config.load(
        write(
            tmp_path,
            '[webhooks]\nlisten = "0.0.0.0:9000"\npublic_url = "https://h.example.com"\n'
            "debounce_s = 2\nshare = 0.2\ncatch_up_s = 60\n",
        )
    )
    assert cfg.webhooks.host_port == ("0.0.0.0", 9000) and cfg.webhooks.public_url == "https://h.example.com"


@pytest.mark.parametrize(
    "extra, key",
    [
        ('[webhooks]\nlisten = "8390"', "webhooks.listen"),
        ('[webhooks]\nlisten = "0.0.0.0:70000"', "webhooks.listen"),
        ('[webhooks]\npublic_url = "hooks.example.com"', "webhooks.public_url"),
        ("[webhooks]\nshare = 0.9", "webhooks.share"),
        ("[webhooks]\nshare = 0", "webhooks.share"),
        ("[webhooks]\ndebounce_s = -1", "webhooks.debounce_s"),
        ("[webhooks]\nport = 1", "webhooks"),
    ],
)
def test_bad_webhooks_keys_name_the_key(tmp_path, extra, key):
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, extra))
    assert key in str(err.value) and "\n" not in str(err.value)


def test_a_short_secret_is_refused_without_being_shown(tmp_path):
    path = write(tmp_path, secret="short-secret-1")
    res = CliRunner().invoke(main, ["--config", path, "check"])
    assert res.exit_code == 2
    assert "sources[0] (amo).webhook_secret" in res.output and "short-secret-1" not in res.output


def test_the_secret_is_redacted_once_read(tmp_path):
    from adapters.redact import redact

    config.load(write(tmp_path))
    assert SECRET not in redact(f"POST /hooks/amo/{SECRET}")


def test_jobs_and_refreshes_share_each_portals_limits(tmp_path):
    cfg = config.load(write(tmp_path))
    amo, b24 = cfg.sources
    share = cfg.webhooks.share
    jobs, hooks = runtime.shared(amo, 1 - share), runtime.shared(amo, share)
    assert jobs.requests_per_second + hooks.requests_per_second == pytest.approx(amo.requests_per_second)
    jobs, hooks = runtime.shared(b24, 1 - share), runtime.shared(b24, share)
    # each bucket keeps a margin of 2 below its size: together they stay under the portal's 50
    assert (jobs.bucket_size - 2) + (hooks.bucket_size - 2) <= b24.bucket_size - 2
    assert jobs.requests_per_second + hooks.requests_per_second <= b24.requests_per_second
