"""Coercing CRM values, once for both CRMs.

The CRMs send numbers as strings ("42", "1500.00"), "0" or "" for "no reference", and
booleans as "Y"/"N", true/false or 1/0. Parsers go through these and never guess on their own.

A value that does not parse is never stored as something else. The strict readers (`number`,
`amount`, `integer`, `text`...) raise `BadValue`; an `Item` reads one CRM item field by field, turns a
bad optional value into None plus a noted problem (stream, item, field, value: the run reports
it), and a missing or bad required one into `BadItem` (the item is skipped and reported).
Numbers with locale separators parse when unambiguous, amounts also with their currency:
"12,5 руб" -> 12.5, "1 234,50" -> 1234.5, "1,234.50" -> 1234.5; "1,234" (thousands or
decimals?), "1e400" (inf), "nan" and a duration "12 мин" (a unit we would have to guess) do not.
"""

from __future__ import annotations

import math
import re
from typing import Callable

from adapters.times import from_offset, from_unix


class BadValue(ValueError):
    """A value that does not mean what its field holds; the message says why."""


class BadItem(ValueError):
    """An item a row cannot be made of (no id, a required field missing or bad): skip it."""

    def __init__(self, field: str | None, value, why: str):
        super().__init__(f"field {field}: {why}" if field else why)
        self.problem = problem(field, value, why, skipped=True)


class FieldError(Exception):
    """An unexpected error while reading one field (a shape no reader foresaw)."""

    def __init__(self, field: str, err: Exception):
        super().__init__(f"field {field}: {type(err).__name__}: {err}")
        self.field = field


def problem(field: str | None, value, why: str, skipped: bool = False) -> dict:
    """One reported value: the field, the value as received (shortened), why, and whether
    the whole item was skipped. The reader adds the item's id, sync the stream."""
    shown = value if isinstance(value, (int, float, str, bool, type(None))) else repr(value)
    if isinstance(shown, str) and len(shown) > 60:
        shown = shown[:57] + "..."
    if isinstance(shown, float) and not math.isfinite(shown):
        shown = repr(shown)  # JSON text has no inf/nan
    return {"field": field, "value": shown, "why": why, "skipped": skipped}


# ---- strict readers: a value or None for "empty", BadValue for junk ----------------------

_SPACES = re.compile(r"[\s\u00a0\u202f\u2009']")
_PLAIN = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_WORDS = re.compile(r"[-+]?(nan|inf|infinity)", re.I)
# A number, optionally with a currency or unit before or after it ("12,5 руб", "$ 1,234.50").
_WITH_UNIT = re.compile(
    r"(?P<pre>[^\d\s\-+.,]*)\s*(?P<num>[-+]?\d[\d\s\u00a0\u202f\u2009',.]*)"
    r"\s*(?P<post>[^\d]*)"
)
_UNIT = re.compile(r"[^\W\d_]{0,8}\.?|[$€£¥₽₸₴]")


def _finite(x: float) -> float:
    if not math.isfinite(x):
        raise BadValue("not a finite number")
    return x


def number(v, units: bool = False) -> float | None:
    """A finite number, None for None / "". Strings may use space, comma or dot grouping when
    the reading is unambiguous, and (`units`) carry a currency or unit before or after the
    number; anything else is BadValue."""
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        raise BadValue("a boolean, not a number")
    if isinstance(v, (int, float)):
        return _finite(float(v))
    if not isinstance(v, str):
        raise BadValue(f"a {type(v).__name__}, not a number")
    s = v.strip()
    if not s:
        return None
    if _PLAIN.fullmatch(s):
        return _finite(float(s))
    if _WORDS.fullmatch(s):
        raise BadValue("not a finite number")
    m = _WITH_UNIT.fullmatch(s)
    if not m or not (
        m["pre"] == ""
        and m["post"].strip() == ""
        or units
        and _UNIT.fullmatch(m["pre"])
        and _UNIT.fullmatch(m["post"].strip())
    ):
        raise BadValue("not a number")
    return _finite(_separated(m["num"].strip()))


def amount(v) -> float | None:
    """A money amount: a `number` that may carry its currency ("12,5 руб", "$ 1,234.50")."""
    return number(v, units=True)


def _separated(s: str) -> float:
    """'1 234,50', '1,234.50', '1.234,5', '12,5' -> float; BadValue when unclear. The decimal
    mark is the last of ',' and '.' when both appear, else a single one; everything before it
    is digit groups (the first 1-3 digits, the rest exactly 3)."""
    sign = -1.0 if s[0] == "-" else 1.0
    s = s.lstrip("+-")
    marks = [c for c in s if c in ",."]
    point = None
    if marks and (len(set(marks)) == 2 or len(marks) == 1):
        point = marks[-1]
        if marks.count(point) > 1:
            raise BadValue("not a number")
    whole, frac = s.rsplit(point, 1) if point else (s, "")
    if point == "," and len(marks) == 1 and len(frac) == 3 and not _SPACES.search(whole):
        raise BadValue("ambiguous: thousands or decimals")
    groups = re.split(r"[\s\u00a0\u202f\u2009',.]", whole)
    head, *rest = groups
    if not (
        head.isdigit() and (not rest or len(head) <= 3) and all(g.isdigit() and len(g) == 3 for g in rest)
    ):
        raise BadValue("not a number (odd digit groups)")
    if frac and not frac.isdigit():
        raise BadValue("not a number")
    return sign * float("".join(groups) + "." + (frac or "0"))


INT64 = (-(2**63), 2**63 - 1)  # what SQLite's INTEGER holds
_DIGITS = re.compile(r"[-+]?\d+")


def _in_int64(i: int) -> int:
    if not INT64[0] <= i <= INT64[1]:
        raise BadValue("past the 64-bit integers the mirror holds")
    return i


def integer(v) -> int | None:
    """A whole number (42, "42", "42.0") within 64-bit integers, digits read exactly; None for
    None / ""; a fraction, junk or a number past 64 bits is BadValue."""
    if isinstance(v, int) and not isinstance(v, bool):
        return _in_int64(v)
    if isinstance(v, str) and _DIGITS.fullmatch(v.strip()):
        return _in_int64(int(v.strip()))
    x = number(v)
    if x is None:
        return None
    if x != int(x):
        raise BadValue("not a whole number")
    return _in_int64(int(x))


def identifier(v) -> int | None:
    """An item's own id: an `integer` not below 0; None for None / ""; negative or junk is
    BadValue."""
    i = integer(v)
    if i is not None and i < 0:
        raise BadValue("not an id (a negative number)")
    return i


def reference(v) -> int | None:
    """A strict foreign id: 0 / "0" / None / "" are none, junk is BadValue."""
    i = integer(v)
    return i if i else None


def text(v) -> str | None:
    """Text as sent; numbers become their text; a list or object is BadValue."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    raise BadValue(f"a {type(v).__name__}, not text")


def objects(v) -> list[dict]:
    """A list of objects; None -> []; anything else (a dict, a string) is BadValue."""
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(i, dict) for i in v):
        raise BadValue("not a list of objects")
    return v


def unix_moment(v) -> str | None:
    """amoCRM unix seconds -> mirror text; None, "", 0 ("never") -> None; junk is BadValue."""
    if v in (None, "", 0, "0"):
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise BadValue(f"a {type(v).__name__}, not a time")
    try:
        secs = int(v) if not isinstance(v, float) else v
    except ValueError:
        raise BadValue("not a time") from None
    if not (0 < secs < 253402300800):  # up to 9999-12-31
        raise BadValue("not a time")
    return from_unix(int(secs))


def offset_moment(v) -> str | None:
    """Bitrix24 `2026-11-23T13:00:00+03:00` -> mirror text; None / "" -> None; junk is BadValue."""
    if v is None or v == "":
        return None
    got = from_offset(v)
    if got is None:
        raise BadValue("not a time")
    return got


# ---- lenient readers (values whose junk means "none", never a number) ----------------------


def to_int(v) -> int | None:
    """42, "42", "42.0" -> 42; None, "", False, junk and numbers past 64 bits -> None."""
    if v is None or v is False or v == "":
        return None
    try:
        i = (
            int(v.strip())
            if isinstance(v, str) and _DIGITS.fullmatch(v.strip())
            else (v if isinstance(v, int) else int(float(v)))
        )
    except (TypeError, ValueError, OverflowError):
        return None
    return i if INT64[0] <= i <= INT64[1] else None


def to_id(v) -> int | None:
    """An item's id leniently: `to_int` not below 0, else None (no id it can be known by)."""
    i = to_int(v)
    return i if i is not None and i >= 0 else None


def ref_id(v) -> int | None:
    """A foreign id: 0 and "0" mean none."""
    i = to_int(v)
    return i if i else None


def flag(v) -> int:
    """Truthy CRM booleans -> 1/0: "Y", "TRUE", "1", True, 1."""
    if isinstance(v, str):
        return 1 if v.strip().upper() in ("Y", "TRUE", "1") else 0
    return 1 if v else 0


# ---- one item, field by field -------------------------------------------------------------

_ABSENT = object()


class Item:
    """One CRM item read field by field. `get` gives None for junk and notes the problem;
    `need` raises BadItem for a missing or bad required field; `problems` go on the page."""

    def __init__(self, raw):
        if not isinstance(raw, dict):
            raise BadItem(None, raw, f"the item is a {type(raw).__name__}, not an object")
        self.raw = raw
        self.problems: list[dict] = []

    def value(self, key: str):
        """The raw value at `key` ("_embedded.contacts" walks objects); _ABSENT if missing."""
        if "." not in key:
            return self.raw.get(key, _ABSENT)
        v = self.raw
        for part in key.split("."):
            if not isinstance(v, dict):
                raise BadValue(f"{part!r} sits in a {type(v).__name__}, not an object")
            if part not in v:
                return _ABSENT
            v = v[part]
        return v

    def _read(self, key: str, read: Callable):
        """(raw, read(raw)); (_ABSENT, None) when missing. A BadValue passes up with the raw
        value on `err.raw`; any other error becomes a FieldError naming the key."""
        raw = None
        try:
            raw = self.value(key)
            return raw, None if raw is _ABSENT else read(raw)
        except BadValue as err:
            err.raw = raw
            raise
        except Exception as err:
            raise FieldError(key, err) from err

    def get(self, key: str, read: Callable = text, default=None):
        """`read(value)`, `default` when absent or empty; a BadValue becomes None (never the
        default: junk is not "nothing") plus a noted problem."""
        try:
            _, got = self._read(key, read)
        except BadValue as err:
            self.problems.append(problem(key, err.raw, str(err)))
            return None
        return default if got is None else got

    def need(self, key: str, read: Callable = text):
        """A value the row cannot do without: missing, empty or bad raises BadItem."""
        try:
            raw, got = self._read(key, read)
        except BadValue as err:
            raise BadItem(key, err.raw, str(err)) from None
        if got is None or got == "":
            raise BadItem(key, None if raw is _ABSENT else raw, "missing")
        return got

    def strict(self, key: str, read: Callable, default=None):
        """A value the row may lack but must not misread (a list of links): absent or empty
        gives `default`, a bad one raises BadItem."""
        try:
            _, got = self._read(key, read)
        except BadValue as err:
            raise BadItem(key, err.raw, str(err)) from None
        return default if got is None else got


# ---- channel and survey scores ------------------------------------------------------------


def channel(*candidates) -> str | None:
    """The acquisition channel: the first candidate with text (a UTM source before the CRM's
    own source), trimmed and lower-case; None when none has any."""
    for v in candidates:
        got = text(v) if isinstance(v, (str, int, float)) and not isinstance(v, bool) else None
        got = (got or "").strip().lower()
        if got:
            return got
    return None


def score_in(v, lo: int, hi: int) -> float | None:
    """A survey score: a whole number in [lo, hi] ("9", 9, 9.0); None when empty; out of
    range, a fraction or junk is BadValue."""
    x = number(v)
    if x is None:
        return None
    if x != int(x) or not lo <= x <= hi:
        raise BadValue(f"not a whole number from {lo} to {hi}")
    return x
