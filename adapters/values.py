"""Coercing CRM values, once for both CRMs.

The CRMs send numbers as strings ("42", "1500.00"), "0" or "" for "no reference", and
booleans as "Y"/"N", true/false or 1/0. Parsers go through these and never guess on their own.
"""

from __future__ import annotations


def to_int(v) -> int | None:
    """42, "42", "42.0" -> 42; None, "", False and junk -> None."""
    if v is None or v is False or v == "":
        return None
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


def ref_id(v) -> int | None:
    """A foreign id: 0 and "0" mean none."""
    i = to_int(v)
    return i if i else None


def to_float(v) -> float | None:
    if v is None or v == "":
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def flag(v) -> int:
    """Truthy CRM booleans -> 1/0: "Y", "TRUE", "1", True, 1."""
    if isinstance(v, str):
        return 1 if v.strip().upper() in ("Y", "TRUE", "1") else 0
    return 1 if v else 0


def int_or_none(v) -> int | None:
    """Strict: None and "" -> None, anything not an integer raises ValueError, so an item we
    cannot read fails loudly instead of becoming an empty number (amoCRM sends JSON numbers)."""
    return None if v is None or v == "" else int(v)


def float_or_none(v) -> float | None:
    """Strict like `int_or_none`: a price that is not a number raises ValueError."""
    return None if v is None or v == "" else float(v)
