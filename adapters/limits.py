"""Where a source's API limits live: the injection point for the adapters' limiters.

An adapter builds its limiters itself. Given no backend (`limits=None`, the default: the
local engine) they are today's in-process classes, one per source per process
(`adapters.http.RateLimiter` / `adapters.amocrm.client.PacedLimiter` for amoCRM,
`adapters.bitrix24.limits.LeakyBucket` and `OperatingBudget` for Bitrix24).

When many processes on many hosts work on the same portals (the fleet), each portal's limits
must be one shared state instead; the fleet passes a backend to the adapter's construction:

    crm = adapters.registry.get(source.kind)
    adapter = crm.make_adapter(source, tokens, limits=RedisLimits.from_url(url))

and the adapter asks it for its limiters by CRM kind and portal (`portal_of(url)`: the host
of the account / portal, so two sources on one account share its limits). A backend is any
object with the three methods of `Limits`; `adapters.redis_limits.RedisLimits` is the one we
ship. This module imports nothing beyond the standard library.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import urlsplit


class Limiter(Protocol):
    def acquire(self) -> None: ...


class Limits(Protocol):
    """Makes the limiters of one portal. `kind`: the CRM kind; `portal`: `portal_of(url)`."""

    def rate_limiter(self, kind: str, portal: str, rate: float, per: float = 1.0) -> Limiter:
        """At most `rate` calls in any `per`-second window, as `adapters.http.RateLimiter`;
        evenly spaced (`.gap` seconds apart), as amoCRM's `PacedLimiter`."""
        ...

    def leaky_bucket(
        self, kind: str, portal: str, size: int = 50, drain: float = 2.0, margin: float = 2.0
    ) -> Limiter:
        """As `adapters.bitrix24.limits.LeakyBucket`: acquire(), penalise(), .capacity."""
        ...

    def operating_budget(
        self, kind: str, portal: str, budget_s: float = 480.0, safety_s: float | None = None
    ):
        """As `adapters.bitrix24.limits.OperatingBudget`: take(), release(), observe(),
        block(), state(), .budget, .safety, .waited_s."""
        ...


def portal_of(url: str | None) -> str:
    """The account or portal a URL belongs to: its host (and port, if any), lower case,
    without credentials or path ('acme.amocrm.ru', 'b24-x.bitrix24.ru', '127.0.0.1:8080')."""
    parts = urlsplit(url or "")
    host = (parts.hostname or "").lower()
    if not host:
        return "?"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host
