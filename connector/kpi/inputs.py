"""Which KPIs may be computed: a KPI is written only from complete data.

Each KPI names the mirror tables it reads (`-- reads:` in its SQL file, or, for a custom KPI,
the tables its query touches), plus the target's own client table. A table is complete when
every stream of the source that feeds it (`Stream.tables` of the adapter's declarations) has
completed at least once and was not skipped on its last run (a scope the credentials lack).
While one is not, the KPI is withheld: not computed, not written, the cards keep their value.
"""

from __future__ import annotations

from dataclasses import dataclass

# The KPI targets, the card types KPIs are computed for and written to, each with the mirror
# table of its clients.
CLIENT_TABLES = {"contact": "contacts", "company": "companies"}
TARGETS = tuple(CLIENT_TABLES)


class NotSynced(Exception):
    """The source has no complete sync in the mirror: there is nothing to compute from."""


@dataclass
class StreamState:
    """One declared stream of a source, as the mirror last saw it."""

    name: str
    tables: tuple[str, ...]
    scope: str | None = None
    completed: bool = False  # some run of it ended ok
    last_status: str | None = None  # ok, failed, skipped, interrupted, running
    last_error: str | None = None

    def problem(self) -> str | None:
        """Why the tables it feeds are incomplete, or None."""
        if self.last_status == "skipped":
            need = f"needs the '{self.scope}' scope" if self.scope else (self.last_error or "skipped")
            return f"stream '{self.name}' was skipped on the last sync ({need})"
        if not self.completed:
            return f"stream '{self.name}' has never completed a sync"
        return None


def stream_states(mirror, source: str, declared) -> list[StreamState]:
    """The declared streams (`adapters.streams.Stream`) with their last run in the mirror."""
    rows = {
        r[0]: r[1:]
        for r in mirror.conn.execute(
            "SELECT s.stream, s.last_success_at, r.status, r.error FROM sync_state s "
            "LEFT JOIN sync_runs r ON r.id = (SELECT max(id) FROM sync_runs "
            "  WHERE source = s.source AND stream = s.stream) WHERE s.source = ?",
            (source,),
        )
    }
    out = []
    for s in declared:
        success, status, error = rows.get(s.name, (None, None, None))
        out.append(StreamState(s.name, tuple(s.tables), s.scope, success is not None, status, error))
    return out


def ever_synced(mirror, source: str) -> bool:
    """Whether any stream of the source has completed a sync."""
    return (
        mirror.conn.execute(
            "SELECT 1 FROM sync_state WHERE source = ? AND last_success_at IS NOT NULL LIMIT 1", (source,)
        ).fetchone()
        is not None
    )


def require_sync(mirror, source: str) -> None:
    """Raise NotSynced, saying what to run, when the source was never synced."""
    if not ever_synced(mirror, source):
        raise NotSynced(
            f"source '{source}' has no complete sync yet: run `crm-connector sync --source {source}` first"
        )


def table_problems(states: list[StreamState]) -> dict[str, str]:
    """Table -> why it is incomplete ("" when complete), for every table a declared stream feeds."""
    out: dict[str, str] = {}
    for s in states:
        why = s.problem() or ""
        for t in s.tables:
            if not out.get(t):
                out[t] = why
    return out


def withheld(kpis, targets, states: list[StreamState]) -> dict[str, str]:
    """KPI name -> why it is withheld, for each KPI reading an incomplete table."""
    problems = table_problems(states)
    out = {}
    for k in kpis:
        reads = list(k.reads) + [CLIENT_TABLES[t] for t in targets if t in k.targets]
        for table in reads:  # a table no declared stream fills has nothing to wait for
            if problems.get(table):
                out[k.name] = problems[table]
                break
    return out
