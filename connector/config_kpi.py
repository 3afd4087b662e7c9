"""The `[kpi]` part of the config: its dataclasses and checks (a mixin of `config.Checker`).

KPI names are checked against the built-in KPIs (`kpi_sql/*.sql`) and the custom ones, so a
typo in `[kpi.fields]` or `kpi --only` is an error naming the nearest known KPI.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field

from connector.custom_sql import builtin_kpi_names, check_custom_sql

TARGETS = ("contact", "company")


@dataclass
class CustomKpi:
    name: str
    target: str
    sql: str
    description: str = ""


@dataclass
class KpiConfig:
    targets: list[str] = field(default_factory=lambda: list(TARGETS))
    churn_days: int = 180
    calls_days: int = 90
    precision: int = 2
    currency_rates: dict[str, float] = field(default_factory=dict)
    fields: dict[str, dict[str, str]] = field(default_factory=dict)
    custom: list[CustomKpi] = field(default_factory=list)




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
        d = self.table("kpi", raw, {"targets": list, "churn_days": int, "calls_days": int,
                                    "precision": int, "currency_rates": dict, "fields": dict,
                                    "custom": list})
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
        return KpiConfig(**d)

    def kpi_fields(self, raw: dict, known: list[str]) -> dict[str, dict[str, str]]:
        """KPI name -> {target: CRM field name}; every name a built-in or custom KPI."""
        out = {}
        for name, label in raw.items():
            key = f"kpi.fields.{name}"
            if name not in known:   # a typo would silently write nothing
                raise self.fail(key, f"unknown KPI '{name}'{nearest(name, known)} "
                                     f"(KPIs: {', '.join(sorted(set(known)))})")
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

