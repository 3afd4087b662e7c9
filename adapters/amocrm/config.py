"""amoCRM's own `[[sources]]` keys and their checks (common keys are checked by the connector)."""

from __future__ import annotations

from adapters.ranges import check_ranges
from adapters.urls import check_url

KEYS = {
    "base_url": str,
    "access_token": str,
    "client_id": str,
    "client_secret": str,
    "redirect_uri": str,
    "reread_hours": float,
    "reread_every_hours": float,
    "reconcile_hours": float,
}
SECRET_KEYS = ("access_token", "client_secret")
# reread_* / reconcile_hours: the wider reads for records dated back (adapters.amocrm.reread).
DEFAULTS = {
    "requests_per_second": 7.0,
    "reread_hours": 48.0,
    "reread_every_hours": 24.0,
    "reconcile_hours": 168.0,
}
# Ranges (lowest, highest, whether the lowest itself is allowed): 0 turns re-reads off
# (reread_hours) or makes them every run (the periods); a year is plenty.
RANGES = {
    "reread_hours": (0, 24 * 366, True),
    "reread_every_hours": (0, 24 * 366, True),
    "reconcile_hours": (0, 24 * 366, True),
}


def check(key: str, d: dict, fail) -> None:
    """Validate and normalise one source's values in place; `fail(key, problem)` -> ConfigError."""
    if "base_url" not in d:
        raise fail(f"{key}.base_url", "is required (https://SUBDOMAIN.amocrm.ru or .kommo.com)")
    d["base_url"] = check_url(f"{key}.base_url", d["base_url"], fail, bare=True).rstrip("/")
    check_ranges(key, d, RANGES, fail)
    if not d.get("access_token"):
        missing = [k for k in ("client_id", "client_secret", "redirect_uri") if not d.get(k)]
        if missing:
            raise fail(
                f"{key}.{missing[0]}",
                "missing credential: set access_token (long-lived token) or "
                "client_id, client_secret and redirect_uri (OAuth)",
            )


def sandbox_source(server) -> dict:
    """The keys that point a source at a running amoCRM sandbox."""
    return {"base_url": server.url, "access_token": server.access_token}
