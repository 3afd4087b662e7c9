"""Numbers, months and moments as the report shows them in each language."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

MONTHS = {
    "en": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
    "ru": ("янв", "фев", "мар", "апр", "май", "июн", "июл", "авг", "сен", "окт", "ноя", "дек"),
}
# A date in a sentence: "6 December 2026" / "6 декабря 2026" (Russian needs the genitive).
MONTHS_LONG = {
    "en": ("January February March April May June July August September October November December").split(),
    "ru": "января февраля марта апреля мая июня июля августа сентября октября ноября декабря".split(),
}


def fmt(value: float | None, language: str = "en") -> str:
    """A number as the page shows it: thousands grouped, at most two decimals, '—' for empty."""
    if value is None:
        return "—"
    text = f"{value:,.2f}".rstrip("0").rstrip(".")
    text = "0" if text == "-0" else text
    if language == "ru":
        text = text.replace(",", "\u00a0").replace(".", ",")
    return text


def month(period: str, language: str) -> str:
    """A measure's period ('2026-03-01') as a month: 'Mar 2026' / 'мар 2026', one unbreakable piece."""
    year, mon = int(period[:4]), int(period[5:7])
    return f"{MONTHS[language][mon - 1]}\u00a0{year}"  # never broken across lines


def moment(iso: str | None, tz: str, language: str) -> str:
    """A stored UTC time ('2026-12-06T06:35:56Z') in the account's time zone, written out:
    '6 December 2026, 09:35 (Europe/Moscow)' / '6 декабря 2026, 09:35 (Europe/Moscow)'."""
    if not iso:
        return "—"
    at = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    local = at.astimezone(ZoneInfo(tz))
    return f"{local.day} {MONTHS_LONG[language][local.month - 1]} {local.year}, {local:%H:%M} ({tz})"


def pct(value: float | None, language: str) -> str:
    """A percentage with its sign: '74.36%' / '74,36 %' (Russian puts a space before it)."""
    return fmt(value, language) + ("\u00a0%" if language == "ru" else "%")
