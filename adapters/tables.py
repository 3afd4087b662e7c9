"""The mirror's tables as streams fill them: each table's storage contract, declared once.

Both CRMs fill the same tables, so the contract lives here, beside `adapters.streams`, and not
in a CRM's folder: a stream names the tables it feeds (`Stream.tables`) and each must be
declared here. The column types are the mirror's DDL (`connector.mirror.schema`); this says how
`connector.mirror.store` writes a page's rows into a table:

- `primary_key`: the columns a row is upserted on (`source`, which the store adds, first): the
  table's primary key, or, for the tables other rows point at, unique beside their single-column
  `key` (`connector.mirror.keys`).
- `child_of`: the rows belong to a parent row (a deal's contact links) and are replaced with
  it: when a page carries such rows, every row the mirror held for each parent on the page is
  deleted first, so links the CRM dropped go. A parent row the store refuses keeps its old
  children too (the page's children of it are dropped with it).
- `stage`: the rows sit in a pipeline stage (`Stage`). A row whose stage its pipeline does not
  have (as the mirror's `stages` know it) is not stored and is reported; the row the mirror
  held stays. A pipeline with no stages in the mirror yet is not judged.
- `derived`: columns the store sets itself after every page, from other rows of the mirror:
  - `closed_at` (a staged table): the moment the row entered the stage it is in, when the
    mirror holds the entity's latest stage change and that change entered that stage; it
    replaces the adapter's value (a CRM whose item lacks the moment sends its best guess).
  - `previous_stage_id` (stage history): the stage of the entity's change before, when the row
    came without one (an incremental run sees a change without the one an earlier run stored).

Rows a CRM stops listing are marked deleted by the stream that lists them (`Page.present`),
not by a table's contract. What each table and column means: docs/mirror.md.
"""

from __future__ import annotations

from dataclasses import dataclass

DERIVED = ("closed_at", "previous_stage_id")


@dataclass(frozen=True)
class Parent:
    """The table whose rows own these (`table`), and the column naming the owner's `id`."""

    table: str
    key: str


@dataclass(frozen=True)
class Stage:
    """Where a staged table keeps its stage.

    entity: its rows' `entity` in `stages` and `stage_changes`. column: its current stage.
    pipeline: the column naming its pipeline, or the one pipeline all its rows are in.
    fills_entry: a `stage_changes` entry row of this entity (no previous stage) that came without
    its stage (amoCRM's `lead_added`) gets the stage the entity entered: the previous stage of
    its next change, else (never moved) this table's current stage; its pipeline is the one
    holding that stage (`connector.mirror.store.Mirror._fill_entry_stages`).
    """

    entity: str
    column: str
    pipeline: str | int
    fills_entry: bool = False


@dataclass(frozen=True)
class Table:
    """One mirror table's storage contract (see the module's docstring)."""

    name: str
    primary_key: tuple[str, ...] = ("source", "id")
    child_of: Parent | None = None
    stage: Stage | None = None
    derived: tuple[str, ...] = ()

    def __post_init__(self):
        unknown = [c for c in self.derived if c not in DERIVED]
        if unknown:
            raise ValueError(f"table '{self.name}': no rule derives {unknown} (one of {DERIVED})")
        if "closed_at" in self.derived and self.stage is None:
            raise ValueError(f"table '{self.name}': closed_at is derived from a stage it has not")


# In the mirror's order (`demo`'s summary counts rows in it).
TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table("users"),
        Table("pipelines"),
        Table("stages", primary_key=("source", "pipeline_id", "id")),
        Table(
            "deals", stage=Stage("deal", "stage_id", "pipeline_id", fills_entry=True), derived=("closed_at",)
        ),
        Table(
            "deal_contacts",
            primary_key=("source", "deal_id", "contact_id"),
            child_of=Parent("deals", "deal_id"),
        ),
        # Bitrix24 lead statuses hang off a pseudo-pipeline with id -1.
        Table("leads", stage=Stage("lead", "status_id", -1), derived=("closed_at",)),
        Table("contacts"),
        Table("companies"),
        Table("tasks"),
        Table("calls"),
        Table("activities"),
        Table(
            "activity_bindings",
            primary_key=("source", "activity_id", "entity_type", "entity_id"),
            child_of=Parent("activities", "activity_id"),
        ),
        Table("survey_answers"),
        Table("stage_changes", derived=("previous_stage_id",)),
    )
}


def table(name: str) -> Table:
    """The contract of `name`; a table declared nowhere is upserted on (source, id)."""
    return TABLES.get(name) or Table(name)
