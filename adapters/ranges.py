"""The range check of a CRM's numeric `[[sources]]` keys (the connector checks the common ones)."""

from __future__ import annotations


def check_ranges(key: str, d: dict, ranges: dict, fail) -> None:
    """Raise `fail(key.name, problem)` for the first key of `d` outside its range in `ranges`:
    name -> (lowest, highest, whether the lowest itself is allowed)."""
    for k, (lo, hi, lo_ok) in ranges.items():
        v = d.get(k)
        if v is not None and not ((v >= lo if lo_ok else v > lo) and v <= hi):
            raise fail(
                f"{key}.{k}",
                f"must be {'at least' if lo_ok else 'greater than'} {lo} and at most {hi}, got {v:g}",
            )
