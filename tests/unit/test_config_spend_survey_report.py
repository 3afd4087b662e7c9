"""Config of the measures and the report: the spend file, survey fields, [report] and the
months' time zone ([kpi] timezone)."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.config import loader as config
from connector.config.kpi import Spend
from connector.config.loader import ConfigError
from tests.unit.test_config import good, write

SPEND = '[kpi.spend]\nfile = "spend.csv"\n'


@pytest.fixture(autouse=True)
def env(monkeypatch):
    monkeypatch.setenv("AMO_TOKEN", "amo-token-value-123")


def with_spend(tmp_path, csv: str | None, extra: str = "") -> str:
    folder = tmp_path / "conf"
    folder.mkdir(exist_ok=True)
    if csv is not None:
        (folder / "spend.csv").write_text(csv, encoding="utf-8")
    return write(folder, good(tmp_path) + SPEND + extra)


def test_spend_file_is_read_relative_to_the_config(tmp_path, monkeypatch):
    path = with_spend(
        tmp_path, 'month,channel,amount,currency\n2026-10, Google ,1 500.5,\n2026-11,yandex,"2000,25",usd\n\n'
    )
    monkeypatch.chdir(tmp_path)  # not the config's folder
    cfg = config.load(path)
    assert cfg.kpi.spend.file == str(tmp_path / "conf" / "spend.csv")
    assert cfg.kpi.spend.rows == [
        Spend("2026-10-01", "google", 1500.5, ""),
        Spend("2026-11-01", "yandex", 2000.25, "USD"),
    ]


def test_three_columns_are_enough(tmp_path):
    cfg = config.load(with_spend(tmp_path, "month,channel,amount\n2026-01,seo,10\n"))
    assert cfg.kpi.spend.rows == [Spend("2026-01-01", "seo", 10.0, "")]


@pytest.mark.parametrize(
    "csv, problem",
    [
        (None, "file not found"),
        ("", "line 1: empty file"),
        ("month,source,amount\n", "line 1: header must be month,channel,amount[,currency]"),
        (
            "month,channel,amount\n2026-10,google,100\n2026-13,google,5\n",
            "line 3: month must look like 2026-10",
        ),
        ("month,channel,amount\n2026-10,google,lots\n", "line 2: amount must be a number, got 'lots'"),
        ("month,channel,amount\n2026-10,google,-5\n", "line 2: amount must be a number >= 0"),
        ("month,channel,amount\n2026-10,,5\n", "line 2: channel is empty"),
        ("month,channel,amount\n2026-10,google\n", "line 2: expected 3 values, got 2"),
        (
            "month,channel,amount,currency\n2026-10,google,5,dollars\n",
            "line 2: currency must be a 3-letter code",
        ),
        (
            "month,channel,amount\n2026-10,google,5\n2026-10,Google,6\n",
            "line 3: google in 2026-10 is already on line 2",
        ),
        (b"month,channel,amount\n2026-10,\xff,5\n", "cannot read"),
    ],
)
def test_bad_spend_file_names_file_and_line(tmp_path, csv, problem):
    if isinstance(csv, bytes):
        path = with_spend(tmp_path, None)
        (tmp_path / "conf" / "spend.csv").write_bytes(csv)
    else:
        path = with_spend(tmp_path, csv)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    message = str(err.value)
    assert message.startswith(f"{path}: kpi.spend.file: {tmp_path / 'conf' / 'spend.csv'}: "), message
    assert problem in message and "\n" not in message


def test_bad_spend_file_is_exit_2_at_the_cli(tmp_path):
    path = with_spend(tmp_path, "month,channel,amount\n2026-10,google,x\n")
    for args in (["status"], ["kpi"], ["report"]):
        r = CliRunner().invoke(main, ["--config", path, *args])
        assert r.exit_code == 2, (args, r.output)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and "spend.csv: line 2: amount must be a number" in lines[0], r.output


def test_survey_report_and_timezone(tmp_path):
    text = good(tmp_path).replace("[kpi]\n", '[kpi]\ntimezone = "Asia/Yekaterinburg"\n')
    text += (
        '[kpi.survey]\nnps_field = "NPS"\ncsat_field = "CSAT"\n\n'
        '[report]\nlanguage = "ru"\nmonths = 6\npath = "out/report.html"\n'
    )
    path = write(tmp_path, text)
    cfg = config.load(path)
    assert cfg.kpi.survey.fields() == {"nps": "NPS", "csat": "CSAT"}
    where = os.path.join(os.path.dirname(os.path.abspath(path)), "out/report.html")  # beside the config
    assert (cfg.report.language, cfg.report.months, cfg.report.path) == ("ru", 6, where)
    assert cfg.timezone == "Asia/Yekaterinburg"


def test_timezone_defaults_to_the_schedules(tmp_path):
    cfg = config.load(write(tmp_path, good(tmp_path)))
    assert cfg.timezone == "Europe/Moscow" and cfg.report.language == "en" and cfg.report.months == 12


@pytest.mark.parametrize(
    "extra, key, problem",
    [
        ('[report]\nlanguage = "de"\n', "report.language", "must be en or ru, got 'de'"),
        ("[report]\nmonths = 0\n", "report.months", "must be greater than 0"),
        ('[report]\ncolour = "red"\n', "report.colour", "unknown key"),
        ('[kpi.survey]\nnps_field = ""\n', "kpi.survey.nps_field", "must be a field name"),
        ('[kpi.survey]\nnps = "NPS"\n', "kpi.survey.nps", "unknown key"),
    ],
)
def test_each_report_and_survey_key_is_checked(tmp_path, extra, key, problem):
    path = write(tmp_path, good(tmp_path) + extra)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert str(err.value).startswith(f"{path}: {key}: ") and problem in str(err.value)


def test_unknown_kpi_timezone(tmp_path):
    path = write(tmp_path, good(tmp_path).replace("[kpi]\n", '[kpi]\ntimezone = "Moon/Base"\n'))
    with pytest.raises(ConfigError, match="kpi.timezone: unknown time zone 'Moon/Base'"):
        config.load(path)
