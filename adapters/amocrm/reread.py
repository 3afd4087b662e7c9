"""Wider windows on a schedule, for records the API lets integrations date back.

amoCRM lets an integration set `created_at` / `updated_at` when it writes cards, tasks and
notes (a telephony filing yesterday's call today). Such a record written after a run but dated
before that run's bookmark falls outside every later incremental window (bookmark minus
`overlap_minutes`). So a `changes` stream whose records can be dated back
(`Request.backdated`) reads a wider window on a schedule, set per source:

- every `reread_every_hours` (24), from `reread_hours` (48) before its bookmark (0: never);
- every `reconcile_hours` (168), in full, from the list's start: a record dated back further.

The bookmark remembers when each last ran (`reread_at`, `reconciled_at`, ISO), written only
when the read completes, so a read cut short is done again. A bookmark from before these keys
counts from its `since`. A stream's first read is full and counts as both. A period is due once
95% of it has passed, so a nightly run that starts a little early still counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from adapters.times import iso, parse_iso

DUE_SHARE = 0.95  # of a period: a run a little earlier than a period after the last still counts


@dataclass(frozen=True)
class Window:
    """Where one read of a `changes` stream starts, and what its final bookmark remembers.

    start: None for the list's start. kind: `full` (no bookmark), `reconcile`, `reread` or
    `incremental`. reread_at / reconciled_at: the values the final bookmark keeps."""

    start: datetime | None
    kind: str
    reread_at: str | None = None
    reconciled_at: str | None = None

    @property
    def wider(self) -> bool:
        """A scheduled wider read (its cost is logged)."""
        return self.kind in ("reread", "reconcile")


def plan(saved: dict, run: datetime, cfg, backdated: bool) -> Window:
    """The window of a read at `run` from the saved bookmark; `cfg` is the source's config
    (`overlap_minutes`, `reread_hours`, `reread_every_hours`, `reconcile_hours`)."""
    if not saved.get("since"):
        return Window(None, "full", iso(run), iso(run)) if backdated else Window(None, "full")
    since = parse_iso(saved["since"])
    start = since - timedelta(minutes=cfg.overlap_minutes)
    if not backdated:
        return Window(start, "incremental")
    reread_at = saved.get("reread_at") or saved["since"]
    reconciled_at = saved.get("reconciled_at") or saved["since"]
    if due(reconciled_at, cfg.reconcile_hours, run):
        return Window(None, "reconcile", iso(run), iso(run))
    if cfg.reread_hours and due(reread_at, cfg.reread_every_hours, run):
        wider = min(start, since - timedelta(hours=cfg.reread_hours))
        return Window(wider, "reread", iso(run), reconciled_at)
    return Window(start, "incremental", reread_at, reconciled_at)


def due(last: str, hours: float, run: datetime) -> bool:
    """Whether a period of `hours` (0: every run) has passed since `last`."""
    return run - parse_iso(last) >= timedelta(hours=hours * DUE_SHARE)
