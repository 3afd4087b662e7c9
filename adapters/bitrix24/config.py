"""Bitrix24's own `[[sources]]` keys and their checks (common keys are checked by the connector)."""

from __future__ import annotations

from urllib.parse import urlsplit

from adapters import redact
from adapters.ranges import check_ranges
from adapters.urls import check_url

# application_token: what event deliveries must carry in auth[application_token] to be trusted
# (the token an app receives when installed, or the one shown for an outgoing webhook).
KEYS = {
    "webhook_url": str,
    "portal_url": str,
    "client_id": str,
    "client_secret": str,
    "oauth_url": str,
    "redirect_uri": str,
    "bucket_size": int,
    "operating_budget_s": float,
    "reconcile_hours": float,
    "application_token": str,
}
SECRET_KEYS = ("webhook_url", "client_secret", "application_token")
# max_workers is a ceiling here: the throttle keeps as many requests in flight as the portal's
# signals allow, up to the bucket's burst; an admin lowers it to leave room for others.
DEFAULTS = {
    "requests_per_second": 2.0,
    "oauth_url": "https://oauth.bitrix.info/oauth/token/",
    "bucket_size": 50,
    "operating_budget_s": 480.0,
    "reconcile_hours": 24.0,
    "max_workers": 50,
}
FIELD_PREFIX = "UF_CRM_"


def webhook_secret(url: str) -> str | None:
    try:
        path = urlsplit(url).path
    except ValueError:  # a malformed host ("https://[::1/..."): the path is still a secret
        path = url.split("//", 1)[-1].partition("/")[2]
    parts = [p for p in path.split("/") if p]
    return parts[2] if len(parts) >= 3 else None


def check(key: str, d: dict, fail) -> None:
    """Validate and normalise one source's values in place; `fail(key, problem)` -> ConfigError."""
    if d.get("webhook_url"):
        redact.register(webhook_secret(d["webhook_url"]))
        url = check_url(f"{key}.webhook_url", d["webhook_url"], fail, redact_value=True)
        split = urlsplit(url)
        parts = [p for p in split.path.split("/") if p]
        if len(parts) < 3 or parts[0] != "rest" or not parts[1].isdigit() or not parts[2]:
            raise fail(f"{key}.webhook_url", "must look like https://PORTAL/rest/USER_ID/SECRET/")
        if len(parts) > 3 or split.query or split.fragment or url.rstrip().endswith(("?", "#")):
            raise fail(
                f"{key}.webhook_url",
                "must end with the secret: https://PORTAL/rest/USER_ID/SECRET/ (no method, no query)",
            )
        d["webhook_url"] = url.rstrip("/") + "/"
    else:
        missing = [k for k in ("portal_url", "client_id", "client_secret") if not d.get(k)]
        if missing:
            raise fail(
                f"{key}.{missing[0]}",
                "missing credential: set webhook_url, or portal_url, client_id and client_secret (OAuth)",
            )
        d["portal_url"] = check_url(f"{key}.portal_url", d["portal_url"], fail, bare=True).rstrip("/")
    if "oauth_url" in d:
        d["oauth_url"] = check_url(f"{key}.oauth_url", d["oauth_url"], fail)
    if d.get("redirect_uri"):  # the app's handler; `auth` listens there when it is on loopback
        d["redirect_uri"] = check_url(f"{key}.redirect_uri", d["redirect_uri"], fail)
    check_ranges(key, d, RANGES, fail)


# Ranges of the numeric keys: (lowest, highest, whether the lowest itself is allowed). The bucket
# is the plan's burst (50, Enterprise 250); the operating budget is per 10 minutes (600 s), so 0
# would wait for ever; reconcile_hours 0 lists all ids on every run, a year is plenty.
RANGES = {
    "bucket_size": (0, 10_000, False),
    "operating_budget_s": (0, 600, False),
    "reconcile_hours": (0, 24 * 366, True),
}


def sandbox_source(server) -> dict:
    """The keys that point a source at a running Bitrix24 sandbox."""
    return {"webhook_url": server.webhook_url}


def field_has_code(f, code: str) -> bool:
    """Bitrix24 names user fields UF_CRM_<code>."""
    return f.code == code or f.key in (code, FIELD_PREFIX + code)
