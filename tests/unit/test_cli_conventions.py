"""CLI conventions: global options on either side of the command, `--version`, usage errors
exit 2 naming the nearest name, and messages that say where they looked."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.run import jobs

CONFIG = """
[storage]
path = "{db}"

[[sources]]
name = "main"
kind = "amocrm"
base_url = "http://127.0.0.1:9"
access_token = "${{AMO_TOKEN}}"

[kpi.fields]
{fields}
"""


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("AMO_TOKEN", "tok-secret-123")
    monkeypatch.delenv("CRM_CONNECTOR_CONFIG", raising=False)
    monkeypatch.setattr(jobs, "check_source", lambda cfg, src: "ok (stub)")


def write(tmp_path, fields='win_rate = "KPI: Win rate, %"') -> str:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(db=tmp_path / "m.db", fields=fields))
    return str(path)


def cli(*args):
    return CliRunner().invoke(main, list(args))


def one_error_line(r, code: int = 2) -> str:
    lines = r.output.splitlines()
    assert r.exit_code == code and len(lines) == 1 and lines[0].startswith("error: "), r.output
    return lines[0]


# -- 3: [kpi.fields] keys name a known KPI


def test_a_kpi_fields_typo_is_a_config_error_naming_the_nearest_kpi(tmp_path, env):
    path = write(tmp_path, 'winrate = "KPI: Win rate, %"')
    line = one_error_line(cli("check", "--config", path))
    assert line.startswith(
        f"error: {path}: kpi.fields.winrate: unknown KPI 'winrate' (did you mean 'win_rate'?)"
    ), line


def test_kpi_fields_may_name_a_custom_kpi(tmp_path, env):
    path = write(
        tmp_path,
        'big = "KPI: Big"\n\n[[kpi.custom]]\nname = "big"\ntarget = "contact"\n'
        'sql = "SELECT contact_id, 1 FROM deal_contacts"',
    )
    assert cli("check", "--config", path).exit_code == 0


# -- 8: global options before or after the command; --version; usage errors exit 2


@pytest.mark.parametrize(
    "args",
    [
        ["--config", "{p}", "check"],
        ["check", "--config", "{p}"],
        ["check", "--config={p}", "-v"],
        ["-v", "check", "--log-format", "json", "--config", "{p}"],
    ],
)
def test_global_options_work_before_or_after_the_command(tmp_path, env, args):
    path = write(tmp_path)
    r = cli(*[a.format(p=path) for a in args])
    assert r.exit_code == 0 and "ok (stub)" in r.output, r.output


def test_config_after_the_command_wins_over_the_one_before(tmp_path, env):
    path = write(tmp_path)
    r = cli("--config", str(tmp_path / "nope.toml"), "check", "--config", path)
    assert r.exit_code == 0, r.output


def test_config_option_after_a_subcommand_of_a_group(tmp_path, env):
    r = cli("kpi", "show", "main", "contact", "1", "--config", str(tmp_path / "nope.toml"))
    assert "nope.toml: file not found (given by --config" in one_error_line(r)


def test_log_format_after_the_command_sets_json_logs(tmp_path, env):
    import logging

    from connector.logs import JsonFormatter

    cli("check", "--log-format", "json", "--config", write(tmp_path))
    assert isinstance(logging.getLogger().handlers[0].formatter, JsonFormatter)


def test_version():
    r = cli("--version")
    assert r.exit_code == 0 and r.output.strip() == f"crm-connector {metadata.version('crm-connector')}"


def test_kpi_only_with_an_unknown_kpi_exits_2_naming_the_nearest(tmp_path, env):
    line = one_error_line(cli("kpi", "--only", "winrate", "--dry-run", "--config", write(tmp_path)))
    assert "unknown KPI 'winrate' (did you mean 'win_rate'?)" in line


# -- 8: "file not found" says the absolute path and where it came from


def test_not_found_from_the_option_gives_the_absolute_path(tmp_path, env, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_error_line(cli("check", "--config", "conf/crm.toml"))
    assert line.startswith(f"error: {tmp_path / 'conf' / 'crm.toml'}: file not found (given by --config")


def test_not_found_from_the_variable_says_so(tmp_path, env, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRM_CONNECTOR_CONFIG", "from-env.toml")
    line = one_error_line(cli("status"))
    assert line.startswith(f"error: {tmp_path / 'from-env.toml'}: file not found (from $CRM_CONNECTOR_CONFIG")


def test_not_found_by_default_says_it_is_the_default(tmp_path, env, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_error_line(cli("check"))
    assert line.startswith(f"error: {tmp_path / 'config.toml'}: file not found (the default; ")
    assert "--config" in line and "$CRM_CONNECTOR_CONFIG" in line


def test_a_directory_as_the_config_is_one_line(tmp_path, env):
    assert "is a directory" in one_error_line(cli("check", "--config", str(tmp_path)))


# -- 8: an empty ${VAR} names the variable


def test_an_empty_variable_is_named_not_reported_as_a_missing_client_id(tmp_path, env, monkeypatch):
    monkeypatch.setenv("AMO_TOKEN", "")
    path = write(tmp_path)
    line = one_error_line(cli("check", "--config", path))
    assert line == f"error: {path}: sources[0].access_token: environment variable AMO_TOKEN is empty"


# -- 11: through the real entry point, no traceback


def test_a_non_utf8_byte_through_python_m_connector(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b'[storage]\npath = "m\xff.db"\n')
    r = subprocess.run(
        [sys.executable, "-m", "connector", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"error: {path}: line 2: byte 0xff is not UTF-8 text (save the file as UTF-8)"
