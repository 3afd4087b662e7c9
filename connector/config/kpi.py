"""The `[kpi]` part of the config: its dataclasses and checks (a mixin of `config.Checker`).

KPI names are checked against the built-in KPIs (`kpi/sql/*.sql`) and the custom ones, so a
typo in `[kpi.fields]` or `kpi --only` is an error naming the nearest known KPI.
"""

from __future__ import annotations

import csv
import difflib
import math
import re
from dataclasses import dataclass, field

from connector.kpi.custom_sql import builtin_kpi_names, check_custom_sql
from connector.kpi.inputs import TARGETS


@dataclass
class CustomKpi:
    name: str
    target: str
    sql: str
    description: str = ""


@dataclass
class SurveyConfig:
    """Card fields (by name in the CRM) holding survey scores: NPS 0-10, CSAT 1-5."""

    nps_field: str | None = None
    csat_field: str | None = None

    def fields(self) -> dict[str, str]:
        """kind ('nps' / 'csat') -> field name, for the fields configured."""
        return {k: v for k, v in (("nps", self.nps_field), ("csat", self.csat_field)) if v}


@dataclass(frozen=True)
class Spend:
    """One line of the spend file: marketing and sales spend of a channel in a month."""

    month: str  # 'YYYY-MM-01'
    channel: str  # normalised like deals.channel: trimmed, lower-case
    amount: float
    currency: str  # '' when the file has no currency column: the source's currency


@dataclass
class SpendConfig:
    file: str | None = None
    rows: list[Spend] = field(default_factory=list)


@dataclass
class KpiConfig:
    targets: list[str] = field(default_factory=lambda: list(TARGETS))
    churn_days: int = 180
    calls_days: int = 90
    precision: int = 2
    currency_rates: dict[str, float] = field(default_factory=dict)
    fields: dict[str, dict[str, str]] = field(default_factory=dict)
    custom: list[CustomKpi] = field(default_factory=list)
    interactions_days: int = 30
    full_pass_days: int = 7  # incremental KPI passes in between; 0: every pass is full
    custom_timeout_s: float = 60.0  # each custom KPI query's time budget
    custom_memory_mb: int = 512  # SQLite's heap while a custom KPI query runs
    timezone: str | None = None  # months of the metrics; None: [schedule] timezone
    survey: SurveyConfig = field(default_factory=SurveyConfig)
    spend: SpendConfig = field(default_factory=SpendConfig)


def kpi_names(kpi_cfg: KpiConfig) -> list[str]:
    """Every KPI a `[kpi.fields]` key or `kpi --only` may name: built-in and custom, sorted."""
    return sorted(set(builtin_kpi_names()) | {c.name for c in kpi_cfg.custom})


def nearest(name: str, known) -> str:
    """' (did you mean 'x'?)' for the closest known name, else ''."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


class KpiChecks:
    """`[kpi]` checks for `config.Checker` (which gives `table`, `fail` and `in_range`)."""

    def kpi(self, raw) -> KpiConfig:
        d = self.table(
            "kpi",
            raw,
            {
                "targets": list,
                "churn_days": int,
                "calls_days": int,
                "precision": int,
                "currency_rates": dict,
                "fields": dict,
                "custom": list,
                "interactions_days": int,
                "full_pass_days": int,
                "timezone": str,
                "custom_timeout_s": float,
                "custom_memory_mb": int,
                "survey": dict,
                "spend": dict,
            },
        )
        for t in d.get("targets", []):
            if t not in TARGETS:
                raise self.fail("kpi.targets", f"unknown target '{t}' (expected contact or company)")
        self.in_range("kpi", d, "kpi.")
        rates = {}
        for cur, rate in d.get("currency_rates", {}).items():
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < math.inf:
                raise self.fail(f"kpi.currency_rates.{cur}", "must be a positive number")
            rates[cur.upper()] = float(rate)
        d["currency_rates"] = rates
        d["custom"] = [self.custom_kpi(i, c) for i, c in enumerate(d.get("custom", []))]
        names = [c.name for c in d["custom"]]
        for i, n in enumerate(names):
            if n in names[:i]:
                raise self.fail(f"kpi.custom[{i}] ({n}).name", f"a custom KPI named '{n}' is defined twice")
        d["fields"] = self.kpi_fields(d.get("fields", {}), builtin_kpi_names() + names)
        if "timezone" in d:
            self.zone("kpi.timezone", d["timezone"])
        d["survey"] = self.survey(d.get("survey", {}))
        d["spend"] = self.spend(d.get("spend", {}))
        return KpiConfig(**d)

    def survey(self, raw) -> SurveyConfig:
        d = self.table("kpi.survey", raw, {"nps_field": str, "csat_field": str})
        for k, v in d.items():
            self.text(f"kpi.survey.{k}", v, "a field name")
        return SurveyConfig(**d)

    def spend(self, raw) -> SpendConfig:
        """`file` relative to the config file's folder, read and checked now (a bad line is a
        config error naming the file and line)."""
        d = self.table("kpi.spend", raw, {"file": str})
        if "file" not in d:
            return SpendConfig()
        self.text("kpi.spend.file", d["file"], "a file path")
        path = self.beside(d["file"])
        return SpendConfig(path, read_spend(path, self.fail))

    def kpi_fields(self, raw: dict, known: list[str]) -> dict[str, dict[str, str]]:
        """KPI name -> {target: CRM field name}; every name a built-in or custom KPI."""
        out = {}
        for name, label in raw.items():
            key = f"kpi.fields.{name}"
            if name not in known:  # a typo would silently write nothing
                raise self.fail(
                    key, f"unknown KPI '{name}'{nearest(name, known)} (KPIs: {', '.join(sorted(set(known)))})"
                )
            if isinstance(label, str) and label.strip():
                out[name] = {t: label for t in TARGETS}
            elif isinstance(label, dict):
                for t, v in label.items():
                    if t not in TARGETS:
                        raise self.fail(f"{key}.{t}", "unknown target (expected contact or company)")
                    if not isinstance(v, str) or not v:
                        raise self.fail(f"{key}.{t}", "must be a field name")
                if not label:
                    raise self.fail(key, "must name a field for contact, company or both")
                out[name] = dict(label)
            else:
                raise self.fail(key, "must be a field name, or a table {contact = ..., company = ...}")
        return out

    def custom_kpi(self, i: int, raw) -> CustomKpi:
        key = f"kpi.custom[{i}]"
        d = self.table(key, raw, {"name": str, "target": str, "sql": str, "description": str})
        for k in ("name", "target", "sql"):
            if not d.get(k):
                raise self.fail(f"{key}.{k}", "is required")
        key = f"kpi.custom[{i}] ({d['name']})"
        if not re.fullmatch(r"[a-z][a-z0-9_]*", d["name"]):
            raise self.fail(f"{key}.name", "use lower-case letters, digits and '_'")
        if d["target"] not in TARGETS:
            raise self.fail(f"{key}.target", "must be contact or company")
        problem = check_custom_sql(d["sql"])
        if problem:
            raise self.fail(f"{key}.sql", problem)
        return CustomKpi(**d)


SPEND_COLUMNS = ("month", "channel", "amount")


def read_spend(path: str, fail) -> list[Spend]:
    """The spend CSV: a header `month,channel,amount[,currency]`, then one row per channel and
    month (month like 2026-10). `fail(key, problem)` makes the ConfigError."""
    key = f"kpi.spend.file: {path}"
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            lines = list(csv.reader(fh))
    except FileNotFoundError:
        raise fail(key, "file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise fail(key, f"cannot read: {getattr(err, 'strerror', None) or err}") from None
    if not lines:
        raise fail(key, "line 1: empty file (expected a header: month,channel,amount[,currency])")
    header = [h.strip().lower() for h in lines[0]]
    if header[:3] != list(SPEND_COLUMNS) or header[3:] not in ([], ["currency"]):
        raise fail(key, f"line 1: header must be month,channel,amount[,currency], got {','.join(lines[0])!r}")
    out, seen = [], {}
    for n, row in enumerate(lines[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        out.append(_spend_row(row, len(header), lambda p, n=n: fail(key, f"line {n}: {p}")))
        k = (out[-1].month, out[-1].channel)
        if k in seen:
            raise fail(key, f"line {n}: {k[1]} in {k[0][:7]} is already on line {seen[k]}")
        seen[k] = n
    return out


def _spend_row(row: list[str], width: int, bad) -> Spend:
    if len(row) != width:
        raise bad(f"expected {width} values, got {len(row)}")
    month, channel, amount = (c.strip() for c in row[:3])
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
        raise bad(f"month must look like 2026-10, got {month!r}")
    if not channel:
        raise bad("channel is empty")
    try:
        value = float(amount.replace(" ", "").replace(",", "."))
    except ValueError:
        raise bad(f"amount must be a number, got {amount!r}") from None
    if not math.isfinite(value) or value < 0:
        raise bad(f"amount must be a number >= 0, got {amount!r}")
    currency = row[3].strip().upper() if width == 4 else ""
    if currency and not re.fullmatch(r"[A-Z]{3}", currency):
        raise bad(f"currency must be a 3-letter code, got {row[3]!r}")
    return Spend(month + "-01", channel.lower(), value, currency)
