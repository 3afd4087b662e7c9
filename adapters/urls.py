"""The one URL rule for every CRM's config: https, or http to a loopback host (sandboxes).

A URL `check` accepts must also be one `requests` can send to: no spaces or control characters,
a host name or IP address, a port in 1-65535. A base URL (`bare=True`) is the site only: the
adapters add the API path (`/api/v4`, `/rest`) themselves, so a copied API link would double it.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

# A DNS name: dot-separated labels of letters, digits and '-' (IDN names as their Unicode letters).
_LABEL = re.compile(r"(?!-)[\w-]{1,63}(?<!-)", re.UNICODE)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_ok(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    return len(host) <= 253 and all(_LABEL.fullmatch(x) and "_" not in x for x in labels)


def _problem(value: str, bare: bool) -> str | None:
    """What makes `value` unusable as a URL here, in a few words; None when it is fine."""
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        return "contains a space or control character"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as err:  # "https://[::1", "https://host:99999"
        return f"is not a valid URL ({err})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http(s) URL"
    if not _host_ok(parts.hostname):
        return f"has an invalid host name '{parts.hostname}'"
    if port == 0:
        return "has port 0 (use 1-65535)"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return "must use https:// (http:// is allowed for loopback hosts only)"
    if bare and (parts.path.strip("/") or parts.query or parts.fragment):
        extra = value.split(parts.netloc, 1)[-1]
        return f"must be the site address only ({parts.scheme}://{parts.netloc}), without '{extra}'"
    return None


def check_url(key: str, value: str, fail, redact_value: bool = False, bare: bool = False) -> str:
    """`value` if it is an http(s) URL allowed here; else raises `fail(key, problem)`.

    `bare`: the URL must be the site only (scheme, host, port), as a base URL is.
    """
    problem = _problem(value, bare)
    if problem:
        shown = "the URL" if redact_value else f"'{value}'"
        raise fail(key, f"{shown} {problem}")
    return value
