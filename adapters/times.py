"""Time, one way everywhere: the mirror's timestamps are ISO 8601 UTC text to the second.

`iso(dt)` -> `2026-11-23T10:00:00Z`; `parse_iso(text)` reads that (and any offset ISO form);
`utc_now()` is the current moment, whole seconds, aware. `from_unix` / `from_offset` turn the
CRMs' own forms (amoCRM unix seconds, Bitrix24 `2026-11-23T13:00:00+03:00`) into mirror text.
"""

from __future__ import annotations

from datetime import datetime, timezone

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_now() -> datetime:
    """Now, in UTC, to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0)


def as_utc(dt: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already."""
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def iso(dt: datetime | None = None) -> str:
    """Mirror text for `dt` (default: now)."""
    return as_utc(dt or utc_now()).strftime(FORMAT)


def parse_iso(text: str) -> datetime:
    """`2026-11-23T10:00:00Z` (or any ISO form with an offset) -> aware UTC datetime.

    Raises ValueError on anything else. Text without an offset is taken as UTC.
    """
    return as_utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))


def from_unix(value) -> str | None:
    """Unix seconds -> mirror text; None, "" and 0 (the CRMs' "never") stay None."""
    if value in (None, "", 0, "0"):
        return None
    return datetime.fromtimestamp(int(value), timezone.utc).strftime(FORMAT)


def from_offset(value) -> str | None:
    """`2026-11-23T13:00:00+03:00` -> `2026-11-23T10:00:00Z`; empty or junk -> None."""
    if not value or not isinstance(value, str):
        return None
    try:
        return iso(parse_iso(value))
    except ValueError:
        return None
