"""Load and check the TOML config (see config.example.toml for every key).

Any problem is a `ConfigError` whose message names the file, the key and what is wrong, in
one line; the CLI prints it and exits with code 2. `${ENV_VAR}` in any string is replaced
from the environment. Secret values are registered for redaction as soon as they are read.

A source's `kind` is looked up in `adapters.registry`: its CRM declares the keys only it takes
(types, checks, defaults, secrets). This module knows only the keys every source has.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from adapters import redact, registry
from adapters.crm import Crm
from connector.cron import cron_trigger
from connector.custom_sql import check_custom_sql

DEFAULT_PATH = "config.toml"
ENV_PATH = "CRM_CONNECTOR_CONFIG"
TARGETS = ("contact", "company")
# The `[[sources]]` keys every source has, and their defaults; each CRM adds its own (`Crm.keys`).
COMMON_KEYS = {"name": str, "kind": str, "requests_per_second": float, "timeout_s": float,
               "overlap_minutes": float, "max_workers": int, "currency": str, "streams": list,
               "verify_tls": bool}
COMMON_DEFAULTS = {"requests_per_second": None, "timeout_s": 60.0, "overlap_minutes": 5.0,
                   "max_workers": 4, "currency": "RUB", "streams": None, "verify_tls": True}


class ConfigError(Exception):
    """A config problem; the message is one line naming file and key."""


@dataclass(init=False, repr=False)
class SourceConfig:
    """One `[[sources]]` block: the common keys as fields, the CRM's own keys in `options`.

    The CRM's keys read as attributes too (`source.<key>`, as its adapter reads them). A key not
    given (or None) takes the CRM's default, else the common default, else None. Built in code it
    takes the block's keys as keyword arguments: `SourceConfig(name=..., kind=..., <key>=...)`.
    """
    name: str
    kind: str
    requests_per_second: float | None
    timeout_s: float
    overlap_minutes: float
    max_workers: int
    currency: str
    streams: list[str] | None
    verify_tls: bool
    options: dict

    def __init__(self, name: str, kind: str, **values):
        values = {**values.pop("options", {}), **values}    # so dataclasses.replace() works
        crm = registry.get(kind)
        unknown = sorted(set(values) - set(COMMON_DEFAULTS) - set(crm.keys))
        if unknown:
            raise TypeError(f"{crm.title} source '{name}' takes no key '{unknown[0]}'")
        given = {k: v for k, v in values.items() if v is not None}
        merged = {**COMMON_DEFAULTS, **dict.fromkeys(crm.keys), **crm.defaults, **given}
        self.name, self.kind = name, kind
        for k in COMMON_DEFAULTS:
            setattr(self, k, merged[k])
        self.options = {k: merged[k] for k in crm.keys}

    def __getattr__(self, key: str):
        # Called only when normal lookup fails, i.e. for the CRM's own keys.
        options = self.__dict__.get("options", {})
        if key in options:
            return options[key]
        raise AttributeError(f"{self.__dict__.get('kind')} source has no key '{key}'")

    def __repr__(self) -> str:
        secret = registry.get(self.kind).secret_keys
        shown = {"name": self.name, "kind": self.kind, **{k: getattr(self, k) for k in COMMON_DEFAULTS},
                 **{k: v for k, v in self.options.items() if k not in secret}}
        return f"SourceConfig({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


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


@dataclass
class ScheduleConfig:
    timezone: str = "UTC"
    sync: str = "0 2 * * *"
    incremental: str | None = None
    kpi_after_sync: bool = True
    misfire_grace_s: int = 3600
    lock_timeout_s: float = 600.0


@dataclass
class NotifyConfig:
    urls: list[str] = field(default_factory=list)
    on_success: bool = False


@dataclass
class Config:
    path: str
    storage_path: str
    sources: list[SourceConfig]
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    kpi: KpiConfig = field(default_factory=KpiConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    token_path: str = ""

    def source(self, name: str) -> SourceConfig:
        for s in self.sources:
            if s.name == name:
                return s
        raise ConfigError(f"{self.path}: no source named '{name}' (have: "
                          f"{', '.join(s.name for s in self.sources) or 'none'})")


def resolve_path(path: str | None) -> str:
    return path or os.environ.get(ENV_PATH) or DEFAULT_PATH


def load(path: str | None = None) -> Config:
    path = resolve_path(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (copy config.example.toml, or pass --config)") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    return Checker(path).config(data)


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class Checker:
    """Walks the parsed TOML, substituting ${ENV} and checking each key."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {problem}")

    def subst(self, key: str, value):
        if isinstance(value, str):
            def env(m):
                if m.group(1) not in os.environ:
                    raise self.fail(key, f"environment variable {m.group(1)} is not set")
                return os.environ[m.group(1)]
            return _ENV.sub(env, value)
        if isinstance(value, list):
            return [self.subst(f"{key}[{i}]", v) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self.subst(f"{key}.{k}", v) for k, v in value.items()}
        return value

    def table(self, key: str, data, allowed: dict[str, type | tuple]) -> dict:
        """Check a TOML table against {name: type}; returns it with ${ENV} substituted."""
        if not isinstance(data, dict):
            raise self.fail(key, "must be a table")
        out = {}
        for k, v in data.items():
            full = f"{key}.{k}" if key else k
            if k not in allowed:
                raise self.fail(full, f"unknown key (expected one of: {', '.join(sorted(allowed))})")
            out[k] = self.typed(full, self.subst(full, v), allowed[k])
        return out

    def typed(self, key: str, v, allowed: type | tuple):
        """`v` if it has one of the allowed types (an integer passes for a number)."""
        types = allowed if isinstance(allowed, tuple) else (allowed,)
        if float in types and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            raise self.fail(key, f"must be {_type_name(types)}, got {_type_name((type(v),))}")
        return v

    def config(self, data: dict) -> Config:
        top = self.table("", data, {"storage": dict, "sources": list, "schedule": dict, "kpi": dict,
                                    "notify": dict})
        storage = self.table("storage", top.get("storage", {}), {"path": str, "token_path": str})
        storage_path = storage.get("path", "crm-mirror.db")
        if not top.get("sources"):
            raise self.fail("sources", "at least one [[sources]] block is required")
        sources, seen = [], set()
        for i, raw in enumerate(top["sources"]):
            src = self.source(i, raw)
            if src.name in seen:
                raise self.fail(f"sources[{i}].name", f"duplicate source name '{src.name}'")
            seen.add(src.name)
            sources.append(src)
        cfg = Config(path=self.path, storage_path=storage_path, sources=sources,
                     schedule=self.schedule(top.get("schedule", {})), kpi=self.kpi(top.get("kpi", {})),
                     notify=self.notify(top.get("notify", {})),
                     token_path=storage.get("token_path", storage_path + ".tokens.json"))
        return cfg

    def source(self, i: int, raw) -> SourceConfig:
        """One [[sources]] block: common keys here, the rest by the CRM its `kind` names."""
        key = f"sources[{i}]"
        d = self.table(key, raw, _source_keys())
        for k in ("name", "kind"):
            if not d.get(k):
                raise self.fail(f"{key}.{k}", "is required")
        key = f"sources[{i}] ({d['name']})"
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", d["name"]):
            raise self.fail(f"{key}.name", "use letters, digits, '.', '_' or '-' only")
        crm = self.crm(key, d)
        for k in crm.secret_keys:
            redact.register(d.get(k))
        for k in ("requests_per_second", "timeout_s", "max_workers"):
            if k in d and d[k] <= 0:
                raise self.fail(f"{key}.{k}", "must be greater than 0")
        if "streams" in d and not all(isinstance(s, str) for s in d["streams"]):
            raise self.fail(f"{key}.streams", "must be a list of stream names")
        crm.check(key, d, self.fail)
        return SourceConfig(**d)

    def crm(self, key: str, d: dict) -> Crm:
        """The registered CRM of the source's kind, after checking its keys are that CRM's."""
        if d["kind"] not in registry.kinds():
            raise self.fail(f"{key}.kind",
                            f"unknown kind '{d['kind']}' (expected {_one_of(registry.kinds())})")
        crm = registry.get(d["kind"])
        for k, v in list(d.items()):
            if k in crm.keys:
                d[k] = self.typed(f"{key}.{k}", v, crm.keys[k])   # another CRM may type it otherwise
            elif k not in COMMON_KEYS:
                owners = [c.title for c in registry.CRMS.values() if k in c.keys]
                raise self.fail(f"{key}.{k}", f"is {_article(owners[0])} {' or '.join(owners)} key; "
                                              f"this source is {crm.kind}")
        return crm

    def schedule(self, raw) -> ScheduleConfig:
        d = self.table("schedule", raw, {"timezone": str, "sync": str, "incremental": str,
                                         "kpi_after_sync": bool, "misfire_grace_s": int,
                                         "lock_timeout_s": float})
        try:
            ZoneInfo(d.get("timezone", "UTC"))
        except Exception:
            raise self.fail("schedule.timezone", f"unknown time zone '{d.get('timezone')}'") from None
        for k in ("sync", "incremental"):
            if k in d:
                try:
                    cron_trigger(d[k], "UTC")
                except ValueError as err:
                    raise self.fail(f"schedule.{k}", f"bad cron expression '{d[k]}': {err}") from None
        return ScheduleConfig(**d)

    def kpi(self, raw) -> KpiConfig:
        d = self.table("kpi", raw, {"targets": list, "churn_days": int, "calls_days": int,
                                    "precision": int, "currency_rates": dict, "fields": dict,
                                    "custom": list})
        for t in d.get("targets", []):
            if t not in TARGETS:
                raise self.fail("kpi.targets", f"unknown target '{t}' (expected contact or company)")
        for k in ("churn_days", "calls_days"):
            if k in d and d[k] <= 0:
                raise self.fail(f"kpi.{k}", "must be greater than 0")
        rates = {}
        for cur, rate in d.get("currency_rates", {}).items():
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0:
                raise self.fail(f"kpi.currency_rates.{cur}", "must be a positive number")
            rates[cur.upper()] = float(rate)
        d["currency_rates"] = rates
        d["custom"] = [self.custom_kpi(i, c) for i, c in enumerate(d.get("custom", []))]
        d["fields"] = self.kpi_fields(d.get("fields", {}))
        return KpiConfig(**d)

    def kpi_fields(self, raw: dict) -> dict[str, dict[str, str]]:
        out = {}
        for name, label in raw.items():
            key = f"kpi.fields.{name}"
            if isinstance(label, str):
                out[name] = {t: label for t in TARGETS}
            elif isinstance(label, dict):
                for t, v in label.items():
                    if t not in TARGETS:
                        raise self.fail(f"{key}.{t}", "unknown target (expected contact or company)")
                    if not isinstance(v, str) or not v:
                        raise self.fail(f"{key}.{t}", "must be a field name")
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

    def notify(self, raw) -> NotifyConfig:
        d = self.table("notify", raw, {"urls": list, "on_success": bool})
        for u in d.get("urls", []):
            redact.register(u)
        return NotifyConfig(**d)


def _source_keys() -> dict[str, type | tuple]:
    """Every key a [[sources]] block may hold, whatever its kind (types of a shared key merged)."""
    keys = dict(COMMON_KEYS)
    for crm in registry.CRMS.values():
        for k, t in crm.keys.items():
            keys[k] = tuple(dict.fromkeys(_types(keys[k]) + _types(t))) if k in keys else t
    return keys


def _types(t: type | tuple) -> tuple:
    return t if isinstance(t, tuple) else (t,)


def _one_of(names: list[str]) -> str:
    """Names as text: "a, b or c"."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _type_name(types: tuple) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    return " or ".join(names.get(t, t.__name__) for t in types)
