"""The one URL rule for every CRM's config: https, or http to a loopback host (sandboxes)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(key: str, value: str, fail, redact_value: bool = False) -> str:
    """`value` if it is an http(s) URL allowed here; else raises `fail(key, problem)`."""
    shown = "the URL" if redact_value else f"'{value}'"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise fail(key, f"{shown} is not an http(s) URL")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise fail(key, f"{shown} must use https:// (http:// is allowed for loopback hosts only)")
    return value
