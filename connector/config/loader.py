"""Load and check the TOML config (see config.example.toml for every key).

Any problem is a `ConfigError` whose message names the file, the key and what is wrong, in
one line; the CLI prints it and exits with code 2. `${ENV_VAR}` in any string is replaced
from the environment. Secret values are registered for redaction as soon as they are read.

A source's `kind` is looked up in `adapters.registry`: its CRM declares the keys only it takes
(types, checks, defaults, secrets). This module knows only the keys every source has.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from adapters import redact, registry
from adapters.crm import Crm
from connector.config.cron import cron_trigger
from connector.config.engine import DEFAULT_QUEUE, EngineChecks, EngineConfig
from connector.config.kpi import KpiChecks, KpiConfig, nearest
from connector.config.report import ReportChecks, ReportConfig
from connector.config.webhooks import WebhooksChecks, WebhooksConfig

DEFAULT_PATH = "config.toml"
ENV_PATH = "CRM_CONNECTOR_CONFIG"
# The `[[sources]]` keys every source has, and their defaults; each CRM adds its own (`Crm.keys`).
COMMON_KEYS = {
    "name": str,
    "kind": str,
    "requests_per_second": float,
    "timeout_s": float,
    "overlap_minutes": float,
    "max_workers": int,
    "parallel_streams": int,
    "currency": str,
    "streams": list,
    "verify_tls": bool,
    "queue": str,
    "webhook_secret": str,
}
COMMON_DEFAULTS = {
    "requests_per_second": None,
    "timeout_s": 60.0,
    "overlap_minutes": 5.0,
    "max_workers": 4,
    "parallel_streams": 8,
    "currency": "RUB",
    "streams": None,
    "verify_tls": True,
    "queue": DEFAULT_QUEUE,
    "webhook_secret": None,
}
# Ranges of the numeric keys, (lowest, highest, whether the lowest itself is allowed), so that
# nothing `check` accepts can hang or crash a run. Why the bounds:
# - max_workers: each worker is a thread holding a connection and a page of rows; the CRMs
#   allow 2-7 requests per second, so more than 50 workers only wait, and a typo such as
#   1000000000 would exhaust memory before the first request.
# - parallel_streams: a thread per stream; a CRM has about ten streams, so more only idle.
# - requests_per_second: below 0.01 (one request per 100 s) a sync of 10 streams takes days.
# - timeout_s: per request; over an hour is a hang, not a timeout.
# - overlap_minutes: negative would skip changes; a week is far beyond any clock skew.
# - days / hours / seconds: a century / a day at most, where larger values overflow dates.
# - kpi.custom_memory_mb: below 16 MiB SQLite cannot even hold the mirror's page cache.
RANGES = {
    "requests_per_second": (0.01, 1000, True),
    "timeout_s": (0, 3600, False),
    "overlap_minutes": (0, 7 * 24 * 60, True),
    "max_workers": (0, 50, False),
    "parallel_streams": (0, 16, False),
    "schedule.misfire_grace_s": (0, 7 * 86400, True),
    "schedule.lock_timeout_s": (0, 86400, True),
    "kpi.churn_days": (0, 36500, False),
    "kpi.calls_days": (0, 36500, False),
    "kpi.precision": (0, 10, True),
    "kpi.interactions_days": (0, 36500, False),
    "kpi.full_pass_days": (0, 36500, True),
    "kpi.custom_timeout_s": (0, 86400, False),
    "kpi.custom_memory_mb": (16, 1024 * 1024, True),
    "report.months": (0, 120, False),
    "engine.visibility_timeout_s": (10, 7 * 86400, True),
    "engine.lease_s": (5, 3600, True),
    "webhooks.debounce_s": (0, 3600, True),
    "webhooks.share": (0, 0.5, False),
    "webhooks.catch_up_s": (5, 86400, True),
}
CRON_HORIZON = timedelta(days=5 * 366)  # a schedule must fire within this (Feb 29 does)


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
    parallel_streams: int
    currency: str
    streams: list[str] | None
    verify_tls: bool
    queue: str
    webhook_secret: str | None
    options: dict

    def __init__(self, name: str, kind: str, **values):
        values = {**values.pop("options", {}), **values}  # so dataclasses.replace() works
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
        shown = {
            "name": self.name,
            "kind": self.kind,
            **{k: getattr(self, k) for k in COMMON_DEFAULTS},
            **{k: v for k, v in self.options.items() if k not in secret},
        }
        return f"SourceConfig({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


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
    report: ReportConfig = field(default_factory=ReportConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)

    @property
    def per_source(self) -> bool:
        """Whether each source has its own mirror file (`[storage] path` holds `{source}`)."""
        return SOURCE_FIELD in self.storage_path

    def scoped(self, name: str) -> "Config":
        """The config of the mirror file that holds source `name`: with one file per source,
        that file, its token file and only that source; with a shared file, this config."""
        if not self.per_source:
            return self
        return replace(
            self,
            sources=[self.source(name)],
            storage_path=self.storage_path.replace(SOURCE_FIELD, name),
            token_path=self.token_path.replace(SOURCE_FIELD, name),
        )

    def scopes(self) -> list["Config"]:
        """One config per mirror file: this one for a shared file, else one per source."""
        return [self.scoped(s.name) for s in self.sources] if self.per_source else [self]

    @property
    def timezone(self) -> str:
        """The account's time zone, for months: [kpi] timezone, else [schedule] timezone."""
        return self.kpi.timezone or self.schedule.timezone

    def source(self, name: str) -> SourceConfig:
        for s in self.sources:
            if s.name == name:
                return s
        raise ConfigError(
            f"{self.path}: no source named '{name}' (have: "
            f"{', '.join(s.name for s in self.sources) or 'none'})"
        )


def resolve_path(path: str | None) -> str:
    return path or os.environ.get(ENV_PATH) or DEFAULT_PATH


def _origin(path: str | None) -> str:
    """Where the config path came from, for a "file not found" message."""
    if path:
        return "given by --config"
    if os.environ.get(ENV_PATH):
        return f"from ${ENV_PATH}"
    return "the default; pass --config PATH or set $" + ENV_PATH


def load(path: str | None = None, secrets: bool = True) -> Config:
    """The config at `path`, else $CRM_CONNECTOR_CONFIG, else ./config.toml; ConfigError if bad.

    `secrets=False` (commands that only read the mirror): a source's secret key whose
    ${ENV_VAR} is unset or empty is left out instead of being an error, and so are the
    credential checks that its absence fails (such a source cannot reach its CRM); so is an
    `[notify] urls` entry."""
    origin, path = _origin(path), resolve_path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise ConfigError(
            f"{os.path.abspath(path)}: file not found ({origin}; copy config.example.toml there)"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{os.path.abspath(path)}: is a directory, not a config file ({origin})") from None
    except OSError as err:
        raise ConfigError(f"{os.path.abspath(path)}: cannot read: {err.strerror}") from None
    return Checker(path, secrets).config(_parse(path, raw))


def _parse(path: str, raw: bytes) -> dict:
    """The TOML document in `raw`; ConfigError naming the line of a bad byte or syntax."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raise ConfigError(
            f"{path}: line 1: the file starts with a UTF-8 byte order mark (BOM); "
            f"save it as UTF-8 without one"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: line {line}: byte 0x{raw[err.start]:02x} is not UTF-8 text (save the file as UTF-8)"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML here: arrays or tables nested too deeply") from None


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


SOURCE_FIELD = "{source}"  # in `[storage] path`: one mirror file per source


def _unset(text: str) -> bool:
    """Whether `text` names an ${ENV_VAR} that is unset or empty."""
    return any(not os.environ.get(m.group(1)) for m in _ENV.finditer(text))


class Checker(KpiChecks, ReportChecks, EngineChecks, WebhooksChecks):
    """Walks the parsed TOML, substituting ${ENV} and checking each key."""

    def __init__(self, path: str, secrets: bool = True):
        self.path, self.secrets = path, secrets

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {problem}")

    def subst(self, key: str, value):
        if isinstance(value, str):

            def env(m):
                if m.group(1) not in os.environ:
                    raise self.fail(key, f"environment variable {m.group(1)} is not set")
                if not os.environ[m.group(1)]:
                    raise self.fail(key, f"environment variable {m.group(1)} is empty")
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
        if isinstance(v, float) and not math.isfinite(v):
            raise self.fail(key, f"must be a finite number, got {v}")
        return v

    def in_range(self, key: str, d: dict, prefix: str = "") -> None:
        """Check the keys of `d` that RANGES bounds (looked up as `prefix` + name)."""
        for k, v in d.items():
            if f"{prefix}{k}" in RANGES and isinstance(v, (int, float)) and not isinstance(v, bool):
                lo, hi, lo_ok = RANGES[f"{prefix}{k}"]
                if not ((v >= lo if lo_ok else v > lo) and v <= hi):
                    raise self.fail(
                        f"{key}.{k}" if key else k,
                        f"must be {'at least' if lo_ok else 'greater than'} {lo:g} "
                        f"and at most {hi:g}, got {v:g}",
                    )

    def text(self, key: str, v, what: str) -> None:
        """A string value that must not be empty nor hold a NUL (a path, a name)."""
        if not isinstance(v, str) or not v.strip() or "\0" in v:
            raise self.fail(key, f"must be {what}, got {v!r}")

    def config(self, data: dict) -> Config:
        self.unset: dict[int, list[str]] = {}  # source index -> secret keys left out
        if isinstance(data.get("sources"), list):
            data = dict(
                data, sources=[self.without_unset_secrets(i, s) for i, s in enumerate(data["sources"])]
            )
        notify = data.get("notify")
        if not self.secrets and isinstance(notify, dict) and isinstance(notify.get("urls"), list):
            # alert URLs hold tokens too; a command that only reads sends no alert
            urls = [u for u in notify["urls"] if not (isinstance(u, str) and _unset(u))]
            data = dict(data, notify=dict(notify, urls=urls))
        top = self.table(
            "",
            data,
            {
                "storage": dict,
                "sources": list,
                "schedule": dict,
                "kpi": dict,
                "notify": dict,
                "report": dict,
                "engine": dict,
                "webhooks": dict,
            },
        )
        storage = self.table("storage", top.get("storage", {}), {"path": str, "token_path": str})
        for k, v in storage.items():
            self.text(f"storage.{k}", v, "a file path")
        for k, v in storage.items():
            if re.search(r"[{}]", v.replace(SOURCE_FIELD, "")):
                raise self.fail(
                    f"storage.{k}",
                    f"{v!r}: the only field a path may hold is {SOURCE_FIELD} (one file per source)",
                )
        storage_path = storage.get("path", "crm-mirror.db")
        if SOURCE_FIELD in storage.get("token_path", "") and SOURCE_FIELD not in storage_path:
            raise self.fail(
                "storage.token_path",
                f"holds {SOURCE_FIELD} but [storage] path does not: "
                f"one token file per source goes with one mirror per source",
            )
        if not top.get("sources"):
            raise self.fail("sources", "at least one [[sources]] block is required")
        token_path = storage.get("token_path", storage_path + ".tokens.json")
        # Files the config names are found beside it, not in whatever folder cron started in.
        storage_path, token_path = self.beside(storage_path), self.beside(token_path)
        for k, v in (("path", storage_path), ("token_path", token_path)):
            self.file_path(f"storage.{k}", v, top["sources"])
        sources, seen = [], {}
        for i, raw in enumerate(top["sources"]):
            src = self.source(i, raw)
            # Names differing only in case would share lock and token files on some file systems
            # and read as the same source to a person.
            if src.name.lower() in seen:
                raise self.fail(
                    f"sources[{i}].name",
                    f"duplicate source name '{src.name}' (same as '{seen[src.name.lower()]}', ignoring case)",
                )
            seen[src.name.lower()] = src.name
            sources.append(src)
        cfg = Config(
            path=self.path,
            storage_path=storage_path,
            sources=sources,
            schedule=self.schedule(top.get("schedule", {})),
            kpi=self.kpi(top.get("kpi", {})),
            notify=self.notify(top.get("notify", {})),
            token_path=token_path,
            report=self.report(top.get("report", {})),
            engine=self.engine(top.get("engine", {})),
            webhooks=self.webhooks(top.get("webhooks", {})),
        )
        if cfg.kpi.timezone is None:  # the account's day (date KPIs) and months: the schedule's zone
            cfg.kpi.timezone = cfg.schedule.timezone
        return cfg

    def beside(self, path: str) -> str:
        """`path` as an absolute path: a relative one is taken from the config file's folder."""
        return os.path.join(os.path.dirname(os.path.abspath(self.path)), os.path.expanduser(path))

    def file_path(self, key: str, path: str, sources) -> None:
        """A file's path must not name a directory (each source's, when it holds {source})."""
        names = {s.get("name") for s in sources if isinstance(s, dict) and isinstance(s.get("name"), str)}
        for p in {path.replace(SOURCE_FIELD, n) for n in names} if SOURCE_FIELD in path else {path}:
            if os.path.isdir(p):
                raise self.fail(
                    key, f"{os.path.abspath(p)} is a directory, not a file; set it to a file name inside it"
                )

    def source(self, i: int, raw) -> SourceConfig:
        """One [[sources]] block: common keys here, the rest by the CRM its `kind` names."""
        key = f"sources[{i}]"
        unset = self.unset.get(i, [])
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
        self.in_range(key, d)
        if "currency" in d:
            if not re.fullmatch(r"[A-Za-z]{3}", d["currency"]):
                raise self.fail(f"{key}.currency", f"must be a 3-letter currency code, got {d['currency']!r}")
            d["currency"] = d["currency"].upper()
        if "streams" in d:
            self.streams(f"{key}.streams", d["streams"], crm)
        if "queue" in d:
            self.queue(f"{key}.queue", d["queue"])
        if "webhook_secret" in d:
            self.webhook_secret(f"{key}.webhook_secret", d["webhook_secret"])
            redact.register(d["webhook_secret"])
        try:
            crm.check(key, d, self.fail)
        except ConfigError:
            if not unset:  # else: the credentials are what is missing, and not needed now
                raise
        return SourceConfig(**d)

    def without_unset_secrets(self, i: int, raw):
        """When secrets are not needed: source block `i` without its secret keys whose
        ${ENV_VAR} is unset or empty (their names go to `self.unset`)."""
        if self.secrets or not isinstance(raw, dict):
            return raw
        secret = {k for c in registry.CRMS.values() for k in c.secret_keys} | {"webhook_secret"}
        unset = [k for k, v in raw.items() if k in secret and isinstance(v, str) and _unset(v)]
        self.unset[i] = unset
        return {k: v for k, v in raw.items() if k not in unset}

    def crm(self, key: str, d: dict) -> Crm:
        """The registered CRM of the source's kind, after checking its keys are that CRM's."""
        if d["kind"] not in registry.kinds():
            raise self.fail(
                f"{key}.kind", f"unknown kind '{d['kind']}' (expected {_one_of(registry.kinds())})"
            )
        crm = registry.get(d["kind"])
        for k, v in list(d.items()):
            if k in crm.keys:
                d[k] = self.typed(f"{key}.{k}", v, crm.keys[k])  # another CRM may type it otherwise
            elif k not in COMMON_KEYS:
                owners = [c.title for c in registry.CRMS.values() if k in c.keys]
                raise self.fail(
                    f"{key}.{k}",
                    f"is {_article(owners[0])} {' or '.join(owners)} key; this source is {crm.kind}",
                )
        return crm

    def streams(self, key: str, names: list, crm: Crm) -> None:
        """A non-empty list of the CRM's declared stream names, each once."""
        known = crm.stream_names()
        if not names:
            raise self.fail(
                key, f"must list at least one stream (or leave it out for all: {', '.join(known)})"
            )
        for i, n in enumerate(names):
            if not isinstance(n, str):
                raise self.fail(f"{key}[{i}]", f"must be a stream name, got {n!r}")
            if n not in known:
                raise self.fail(
                    f"{key}[{i}]",
                    f"{crm.title} has no stream '{n}'{nearest(n, known)} (streams: {', '.join(known)})",
                )
            if n in names[:i]:
                raise self.fail(f"{key}[{i}]", f"stream '{n}' is listed twice")

    def schedule(self, raw) -> ScheduleConfig:
        d = self.table(
            "schedule",
            raw,
            {
                "timezone": str,
                "sync": str,
                "incremental": str,
                "kpi_after_sync": bool,
                "misfire_grace_s": int,
                "lock_timeout_s": float,
            },
        )
        tz = self.zone("schedule.timezone", d.get("timezone", "UTC"))
        self.in_range("schedule", d, "schedule.")
        for k in ("sync", "incremental"):
            if k in d:
                self.cron(f"schedule.{k}", d[k], tz)
        return ScheduleConfig(**d)

    def zone(self, key: str, name: str) -> ZoneInfo:
        try:
            return ZoneInfo(name)
        except Exception:
            raise self.fail(key, f"unknown time zone '{name}'") from None

    def cron(self, key: str, expr: str, tz) -> None:
        """Cron text that parses and fires within a few years (`0 2 30 2 *` never does)."""
        try:
            trigger = cron_trigger(expr, tz)
        except Exception as err:  # APScheduler raises ValueError, and others for odd text
            raise self.fail(key, f"bad cron expression '{expr}': {err}") from None
        now = datetime.now(timezone.utc)
        nxt = trigger.get_next_fire_time(None, now)
        if nxt is None or nxt - now > CRON_HORIZON:
            raise self.fail(
                key,
                f"cron expression '{expr}' never fires (check the day and month: e.g. February has no 30th)",
            )

    def notify(self, raw) -> NotifyConfig:
        d = self.table("notify", raw, {"urls": list, "on_success": bool})
        for i, u in enumerate(d.get("urls", [])):
            if not isinstance(u, str) or not u.strip():
                raise self.fail(
                    f"notify.urls[{i}]",
                    'must be an Apprise URL such as "tgram://TOKEN/CHAT" (a non-empty string)',
                )
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
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }
    return " or ".join(names.get(t, t.__name__) for t in types)


__all__ = [
    "Config",
    "ConfigError",
    "SourceConfig",
    "ScheduleConfig",
    "NotifyConfig",
    "EngineConfig",
    "WebhooksConfig",
    "load",
]
