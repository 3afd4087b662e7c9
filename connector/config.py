"""Load and check the TOML config (see config.example.toml for every key).

Any problem is a `ConfigError` whose message names the file, the key and what is wrong, in
one line; the CLI prints it and exits with code 2. `${ENV_VAR}` in any string is replaced
from the environment. Secret values are registered for redaction as soon as they are read.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from adapters import redact

DEFAULT_PATH = "config.toml"
ENV_PATH = "CRM_CONNECTOR_CONFIG"
KINDS = ("amocrm", "bitrix24")
TARGETS = ("contact", "company")
SECRET_KEYS = ("access_token", "client_secret", "webhook_url", "refresh_token")


class ConfigError(Exception):
    """A config problem; the message is one line naming file and key."""


@dataclass
class SourceConfig:
    name: str
    kind: str
    # amoCRM
    base_url: str | None = None
    access_token: str | None = field(default=None, repr=False)
    redirect_uri: str | None = None
    # Bitrix24
    webhook_url: str | None = field(default=None, repr=False)
    portal_url: str | None = None
    oauth_url: str = "https://oauth.bitrix.info/oauth/token/"
    bucket_size: int = 50
    operating_budget_s: float = 480.0
    reconcile_hours: float = 24.0
    # both
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    requests_per_second: float | None = None
    timeout_s: float = 60.0
    overlap_minutes: float = 5.0
    max_workers: int = 4
    currency: str = "RUB"
    streams: list[str] | None = None
    verify_tls: bool = True

    @property
    def uses_oauth(self) -> bool:
        return not self.access_token and not self.webhook_url


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
            v = self.subst(full, v)
            types = allowed[k] if isinstance(allowed[k], tuple) else (allowed[k],)
            if float in types and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
                raise self.fail(full, f"must be {_type_name(types)}, got {_type_name((type(v),))}")
            out[k] = v
        return out

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

    SOURCE_KEYS = {
        "name": str, "kind": str, "base_url": str, "access_token": str, "client_id": str,
        "client_secret": str, "redirect_uri": str, "requests_per_second": float, "webhook_url": str,
        "portal_url": str, "oauth_url": str, "bucket_size": int, "operating_budget_s": float,
        "reconcile_hours": float, "timeout_s": float, "overlap_minutes": float, "max_workers": int,
        "currency": str, "streams": list, "verify_tls": bool,
    }

    def source(self, i: int, raw) -> SourceConfig:
        key = f"sources[{i}]"
        d = self.table(key, raw, self.SOURCE_KEYS)
        for k in SECRET_KEYS:
            redact.register(d.get(k))
        if "webhook_url" in d:
            redact.register(_webhook_secret(d["webhook_url"]))
        for k in ("name", "kind"):
            if not d.get(k):
                raise self.fail(f"{key}.{k}", "is required")
        name = d["name"]
        key = f"sources[{i}] ({name})"
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise self.fail(f"{key}.name", "use letters, digits, '.', '_' or '-' only")
        if d["kind"] not in KINDS:
            raise self.fail(f"{key}.kind", f"unknown kind '{d['kind']}' (expected amocrm or bitrix24)")
        for k in ("requests_per_second", "timeout_s", "bucket_size", "max_workers"):
            if k in d and d[k] <= 0:
                raise self.fail(f"{key}.{k}", "must be greater than 0")
        if "streams" in d and not all(isinstance(s, str) for s in d["streams"]):
            raise self.fail(f"{key}.streams", "must be a list of stream names")
        if d["kind"] == "amocrm":
            self.amocrm(key, d)
        else:
            self.bitrix24(key, d)
        return SourceConfig(**d)

    def amocrm(self, key: str, d: dict) -> None:
        for k in ("webhook_url", "portal_url", "oauth_url", "bucket_size", "operating_budget_s",
                  "reconcile_hours"):
            if k in d:
                raise self.fail(f"{key}.{k}", "is a Bitrix24 key; this source is amocrm")
        if "base_url" not in d:
            raise self.fail(f"{key}.base_url", "is required (https://SUBDOMAIN.amocrm.ru or .kommo.com)")
        d["base_url"] = self.url(f"{key}.base_url", d["base_url"]).rstrip("/")
        if not d.get("access_token"):
            missing = [k for k in ("client_id", "client_secret", "redirect_uri") if not d.get(k)]
            if missing:
                raise self.fail(f"{key}.{missing[0]}",
                                "missing credential: set access_token (long-lived token) or "
                                "client_id, client_secret and redirect_uri (OAuth)")
        d.setdefault("requests_per_second", 7.0)

    def bitrix24(self, key: str, d: dict) -> None:
        for k in ("base_url", "access_token", "redirect_uri"):
            if k in d:
                raise self.fail(f"{key}.{k}", "is an amoCRM key; this source is bitrix24")
        if d.get("webhook_url"):
            url = self.url(f"{key}.webhook_url", d["webhook_url"], redact_value=True)
            parts = [p for p in urlsplit(url).path.split("/") if p]
            if len(parts) < 3 or parts[0] != "rest" or not parts[1].isdigit() or not parts[2]:
                raise self.fail(f"{key}.webhook_url",
                                "must look like https://PORTAL/rest/USER_ID/SECRET/")
            d["webhook_url"] = url.rstrip("/") + "/"
        else:
            missing = [k for k in ("portal_url", "client_id", "client_secret") if not d.get(k)]
            if missing:
                raise self.fail(f"{key}.{missing[0]}",
                                "missing credential: set webhook_url, or portal_url, client_id and "
                                "client_secret (OAuth)")
            d["portal_url"] = self.url(f"{key}.portal_url", d["portal_url"]).rstrip("/")
        if "oauth_url" in d:
            d["oauth_url"] = self.url(f"{key}.oauth_url", d["oauth_url"])
        d.setdefault("requests_per_second", 2.0)

    def url(self, key: str, value: str, redact_value: bool = False) -> str:
        shown = "the URL" if redact_value else f"'{value}'"
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.fail(key, f"{shown} is not an http(s) URL")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise self.fail(key, f"{shown} must use https:// (http:// is allowed for loopback hosts only)")
        return value

    def schedule(self, raw) -> ScheduleConfig:
        d = self.table("schedule", raw, {"timezone": str, "sync": str, "incremental": str,
                                         "kpi_after_sync": bool, "misfire_grace_s": int,
                                         "lock_timeout_s": float})
        try:
            from zoneinfo import ZoneInfo
            ZoneInfo(d.get("timezone", "UTC"))
        except Exception:
            raise self.fail("schedule.timezone", f"unknown time zone '{d.get('timezone')}'") from None
        from connector.scheduler import cron_trigger
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
        try:
            from connector.kpi import check_custom_sql
        except ImportError:  # the KPI engine is not there yet
            check_custom_sql = None
        if check_custom_sql:
            problem = check_custom_sql(d["sql"])
            if problem:
                raise self.fail(f"{key}.sql", problem)
        return CustomKpi(**d)

    def notify(self, raw) -> NotifyConfig:
        d = self.table("notify", raw, {"urls": list, "on_success": bool})
        for u in d.get("urls", []):
            redact.register(u)
        return NotifyConfig(**d)


def _webhook_secret(url: str) -> str | None:
    parts = [p for p in urlsplit(url).path.split("/") if p]
    return parts[2] if len(parts) >= 3 else None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _type_name(types: tuple) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    return " or ".join(names.get(t, t.__name__) for t in types)
