"""amoCRM's own `[[sources]]` keys and their checks (common keys are checked by the connector)."""

from __future__ import annotations

from adapters.urls import check_url

KEYS = {"base_url": str, "access_token": str, "client_id": str, "client_secret": str, "redirect_uri": str}
SECRET_KEYS = ("access_token", "client_secret")
DEFAULTS = {"requests_per_second": 7.0}


def check(key: str, d: dict, fail) -> None:
    """Validate and normalise one source's values in place; `fail(key, problem)` -> ConfigError."""
    if "base_url" not in d:
        raise fail(f"{key}.base_url", "is required (https://SUBDOMAIN.amocrm.ru or .kommo.com)")
    d["base_url"] = check_url(f"{key}.base_url", d["base_url"], fail, bare=True).rstrip("/")
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
