"""What adapters hand the rest of the connector: pages of records, custom fields, card writes.

An adapter (`adapters.adapter.Adapter`) speaks HTTP to one CRM account and yields plain records;
it never touches SQLite. `connector.run.sync` wires `Adapter.fetch` to `connector.mirror.store`,
and `connector.kpi.writeback` calls the field methods. Records use the column names of the mirror's
tables (docs/mirror.md): no `source` column (the store adds
it) and a `raw` key holding the CRM item as received (a dict; the store serialises it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class Page:
    """One unit of progress, stored in one transaction.

    rows: mirror table -> records to upsert on their primary key.
    deleted / restored: mirror table -> ids whose `is_deleted` becomes 1 / 0.
    deleted_at: mirror table -> {id: ISO moment of the deletion}, for records whose restore the
    CRM reports by no event (amoCRM tasks): only their list, which serves them again, says they
    are back. The store marks such a row deleted unless its `updated_at` is later than the
    deletion (listed alive since: restored); see `connector.mirror.store.Mirror._delete_unless_newer`.
    present: mirror table -> every id the CRM still has (a reconciliation pass): rows of this
    source missing from the list are marked deleted, listed rows are marked not deleted.
    bookmark: when not None, the stream's new bookmark, saved in the same transaction,
    so a crash loses at most this page. Adapters never set it past the run's start.
    problems: values the parsers could not read (`adapters.values.problem` dicts with the
    item id): stored as NULL, or the item skipped; the run reports them.
    expected: when not None, about how many more entities the read will bring than it
    announced before (an estimate the CRM's answers give for free), for the progress display.
    """

    rows: dict[str, list[dict]] = field(default_factory=dict)
    deleted: dict[str, list] = field(default_factory=dict)
    restored: dict[str, list] = field(default_factory=dict)
    deleted_at: dict[str, dict] = field(default_factory=dict)
    present: dict[str, list] = field(default_factory=dict)
    bookmark: str | None = None
    problems: list[dict] = field(default_factory=list)
    expected: int | None = None

    def merge(self, other: "Page") -> "Page":
        """Add `other`'s records to this page; a later deletion or restore of an id wins."""
        for table, rows in other.rows.items():
            self.rows.setdefault(table, []).extend(rows)
        for mine, theirs in (
            (self.deleted, other.restored),
            (self.deleted_at, other.restored),
            (self.restored, other.deleted),
            (self.restored, other.deleted_at),
        ):
            for table, ids in theirs.items():
                _drop(mine, table, ids)
        for table, dated in other.deleted_at.items():
            self.deleted_at.setdefault(table, {}).update(dated)
        for mine, theirs in ((self.deleted, other.deleted), (self.restored, other.restored)):
            for table, ids in theirs.items():
                have = mine.setdefault(table, [])
                have.extend(i for i in ids if i not in have)
        for table, ids in other.present.items():
            self.present.setdefault(table, []).extend(ids)
        if other.bookmark is not None:
            self.bookmark = other.bookmark
        self.problems.extend(other.problems)
        return self

    def count(self) -> int:
        return sum(len(v) for v in self.rows.values()) + sum(
            len(v) for changes in (self.deleted, self.restored, self.deleted_at) for v in changes.values()
        )

    def entities(self, table: str) -> int:
        """Entities of `table` this page writes (upserted, deleted or restored): what a run
        reports, so a deal's contact links do not count as more deals."""
        return len(self.rows.get(table, ())) + sum(
            len(changes.get(table, ())) for changes in (self.deleted, self.restored, self.deleted_at)
        )


def _drop(changes: dict, table: str, ids) -> None:
    """Take `ids` out of `changes[table]` (a list of ids, or a dict keyed by id); an emptied
    table goes."""
    have, gone = changes.get(table), set(ids)
    if have is None:
        return
    have = (
        {i: v for i, v in have.items() if i not in gone}
        if isinstance(have, dict)
        else [i for i in have if i not in gone]
    )
    if have:
        changes[table] = have
    else:
        del changes[table]


@dataclass
class CrmField:
    """A custom field on contact or company cards, as the CRM describes it.

    key: what a write names the field by (amoCRM: the numeric field id as text;
    Bitrix24: `UF_CRM_...`). type: the CRM's own type name (`numeric`, `double`, `string`...).
    """

    key: str
    name: str
    type: str
    code: str | None = None


@dataclass
class FieldWrite:
    """One card update: set `values` (field key -> number, a date as an aware `datetime` at the
    start of the account's day, or None to clear) on one card."""

    entity_id: int
    values: dict[str, float | datetime | None]


@dataclass
class WriteResult:
    """How one card's write went. retry_alone: the CRM rejected the card as part of a batch
    and it may still land sent on its own (`adapters.adapter.FieldWriter` sends it once more)."""

    entity_id: int
    ok: bool
    error: str | None = None
    retry_alone: bool = False
