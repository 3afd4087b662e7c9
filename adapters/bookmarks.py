"""Bookmarks: a JSON object per stream, with one declared shape per stream mode.

    snapshot   {"at": ISO}                      when the collection was last read whole
               (+ "categories": [ids]: Bitrix24 deal pipelines seen, so one batch reads all)
    changes    {"since": ISO}                   rows changed from here on are read next time
               (+ "api_filter": bool: amoCRM accounts with list filters;
                  "reread_at", "reconciled_at": ISO: amoCRM's last wider reads;
                  "pass": ISO, "windows": [[lo, hi], ...]: a pass cut short, resumed by ID window)
    append     {"last_id": {part: id}}          rows after these ids are read next time
    reconcile  {"at": ISO}                      when every id was last listed

`load(mode, text)` reads one; an unreadable bookmark reads as `{}`, which means "read
everything", and is logged. `dump(mode, **fields)` checks the shape and writes compact JSON.
`describe(text)` is the one-line reading `crm-connector status` shows.
"""

from __future__ import annotations

import json
import logging

from adapters.times import parse_iso

log = logging.getLogger(__name__)

SHAPES: dict[str, dict[str, type | tuple]] = {
    "snapshot": {"at": str, "categories": list},
    "changes": {
        "since": (str, type(None)),
        "api_filter": bool,
        "pass": str,
        "windows": list,
        "reread_at": str,
        "reconciled_at": str,
    },
    "append": {"last_id": dict},
    "reconcile": {"at": str},
}


class BookmarkError(ValueError):
    """A bookmark that does not fit its mode's shape (a bug in a reader, not user input)."""


def _check(mode: str, data: dict) -> dict:
    shape = SHAPES[mode]
    for key, value in data.items():
        if key not in shape:
            raise BookmarkError(f"{mode} bookmark: unknown key '{key}' (expected {', '.join(shape)})")
        if not isinstance(value, shape[key]) or (isinstance(value, bool) and shape[key] is not bool):
            raise BookmarkError(f"{mode} bookmark: '{key}' has the wrong type ({type(value).__name__})")
    for key in ("at", "since", "pass", "reread_at", "reconciled_at"):
        if isinstance(data.get(key), str):
            parse_iso(data[key])  # raises ValueError on a malformed moment
    if mode == "append" and not all(
        isinstance(v, int) and not isinstance(v, bool) for v in data.get("last_id", {}).values()
    ):
        raise BookmarkError("append bookmark: last_id values must be integers")
    return data


def load(mode: str, text: str | dict | None) -> dict:
    """The bookmark as a dict of its mode's shape; {} when there is none or it is unreadable."""
    if not text:
        return {}
    try:
        data = dict(text) if isinstance(text, dict) else json.loads(text)
        return _check(mode, data)
    except (ValueError, TypeError, AttributeError) as err:
        log.warning("unreadable %s bookmark %r (%s); reading the stream in full", mode, str(text)[:60], err)
        return {}


def dump(mode: str, **fields) -> str:
    """Compact JSON of a bookmark; None values are left out. Raises BookmarkError on a bad shape."""
    data = {k: v for k, v in fields.items() if v is not None or (mode == "changes" and k == "since")}
    return json.dumps(_check(mode, data), separators=(",", ":"), sort_keys=True)


def describe(text: str | None) -> str:
    """A bookmark as a person reads it: `changes since 2026-11-23 10:00:00 UTC`."""
    if not text:
        return ""
    try:
        data = json.loads(text)
    except ValueError:
        return text[:40]
    if not isinstance(data, dict):
        return text[:40]
    parts = []
    if "since" in data:
        parts.append(f"since {_moment(data['since'])}" if data["since"] else "first pass")
    if "at" in data:
        parts.append(f"read {_moment(data['at'])}")
    if isinstance(data.get("last_id"), dict):
        parts.append("after " + ", ".join(f"{k} #{v}" for k, v in sorted(data["last_id"].items())))
    if data.get("windows"):
        parts.append(f"resuming {len(data['windows'])} window(s)")
    if data.get("api_filter") is False:
        parts.append("no API filter")
    return "; ".join(parts) or text[:40]


def _moment(text: str) -> str:
    return text.replace("T", " ").replace("Z", " UTC") if isinstance(text, str) else str(text)
