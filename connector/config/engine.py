"""The `[engine]` part of the config: which engine runs the jobs (a mixin of `config.Checker`).

- `local` (the default): the jobs run in this process, one source after another; no Redis.
- `celery`: the jobs run on Celery workers (`crm-connector worker`) fed through a Redis
  broker; each portal's rate limits and its exclusive lease live in that Redis, so any number
  of workers on any number of hosts share them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from adapters import redact

KINDS = ("local", "celery")
DEFAULT_QUEUE = "crm-connector"


@dataclass
class EngineConfig:
    """kind: local or celery. broker_url: `redis://HOST:PORT/DB` (celery). result_backend: where
    job results wait for `run --once` (default: the broker's Redis). visibility_timeout_s: how
    long a job taken by a worker that then vanished (killed, host lost) stays invisible before
    another worker gets it. lease_s: each portal's lease in Redis, renewed while its job runs."""

    kind: str = "local"
    broker_url: str | None = None
    result_backend: str | None = None
    visibility_timeout_s: int = 300
    lease_s: int = 30

    @property
    def celery(self) -> bool:
        return self.kind == "celery"


def redis_problem(url: str) -> str | None:
    """What is wrong with a Redis URL (`redis://[:PASSWORD@]HOST[:PORT][/DB]`, `rediss://` for
    TLS, `unix:///path/to/redis.sock`), or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        return f"not a Redis URL ({err})"
    if parts.scheme not in ("redis", "rediss", "unix"):
        return "must start with redis://, rediss:// or unix://"
    if parts.scheme == "unix":
        return None if parts.path else "unix:// needs the socket's path"
    if not parts.hostname:
        return "names no host (redis://HOST:PORT/DB)"
    if port is not None and not 0 < port < 65536:
        return f"port {port} is out of range"
    db = parts.path.strip("/")
    if db and not re.fullmatch(r"\d{1,2}", db):
        return f"database '{db}' must be a number such as 0"
    return None


class EngineChecks:
    """`[engine]` checks for `config.Checker` (which gives `table`, `fail` and `in_range`)."""

    def engine(self, raw) -> EngineConfig:
        d = self.table(
            "engine",
            raw,
            {
                "kind": str,
                "broker_url": str,
                "result_backend": str,
                "visibility_timeout_s": int,
                "lease_s": int,
            },
        )
        kind = d.get("kind", "local")
        if kind not in KINDS:
            raise self.fail("engine.kind", f"must be local or celery, got {kind!r}")
        for key in ("broker_url", "result_backend"):
            if key in d:
                redact.register(_password(d[key]))
                problem = redis_problem(d[key])
                if problem:
                    raise self.fail(f"engine.{key}", f"{shown_url(d[key])!r}: {problem}")
        if kind == "celery" and "broker_url" not in d:
            raise self.fail(
                "engine.broker_url",
                'is required with kind = "celery" (for example "redis://127.0.0.1:6379/0")',
            )
        self.in_range("engine", d, "engine.")
        return EngineConfig(**d)

    def queue(self, key: str, name) -> None:
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]{1,100}", name):
            raise self.fail(key, f"must be a queue name (letters, digits, '.', '_', ':', '-'), got {name!r}")


def shown_url(url: str) -> str:
    """A Redis URL as messages may show it: its password masked whatever its length (the
    redaction registry ignores values under 6 characters, and Redis passwords may be that
    short), then every registered secret masked too."""
    scheme, sep, rest = url.partition("://")
    if sep:
        userinfo, at, hostpart = rest.rpartition("@")
        if at and ":" in userinfo:
            rest = f"{userinfo.split(':', 1)[0]}:{redact.MASK}@{hostpart}"
        url = f"{scheme}{sep}{rest}"
    return redact.redact(url)


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None
