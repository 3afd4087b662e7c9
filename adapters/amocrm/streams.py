"""amoCRM streams: every stream declared once.

Each stream is an `adapters.streams.Stream`; its `request` is a `Request` (what to ask amoCRM
for). `adapters.amocrm.adapter` reads pages for a declaration, one reader per mode, and never
looks at a stream's name. The parsers (one API item to records) are in `adapters.amocrm.parsers`,
which says what each stream's rows mean.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from adapters.amocrm.parsers import (
    ENTITY,
    EVENT_TYPES,
    NOTE_KINDS,
    company_row,
    contact_row,
    deal_rows,
    event_rows,
    note_rows,
    pipeline_rows,
    task_row,
    user_row,
)
from adapters.streams import Stream

BY_UPDATED_AT = (("order[updated_at]", "asc"),)


@dataclass(frozen=True)
class Request:
    """What to ask amoCRM for one stream.

    path / embedded: the list endpoint and its `_embedded` key. params: fixed query pairs.
    order: the sort asked for on filtered incremental reads. sorted_by: items then arrive
    ascending by this field, so a page's maximum is a safe per-page bookmark. limit: page size
    (events allow 100). paged: False for lists that take no paging (pipelines). gated: list
    filters are amoCRM's paid add-on here; without it, page newest-first and stop at the
    bookmark. skip_on_403: a 403 means "not available to this token", not a block: the stream
    is skipped with a warning giving this reason. page_order: items of one page are parsed in
    ascending order of this field (event order is undocumented; a later event must win).
    bounded: ask for `filter[cursor][to]=run start` too. False where the list is not ordered
    by a cursor that edits move (tasks, by id): there an edit mid-read would take the row out
    of the window and move every later row up, while unbounded it keeps its place.
    lookup: what the reader asks for beside each page's items, for the parser (`ctx.side`):
    "merged_cards" (the card an `entity_merged` event names: alive or gone), "customers" (the
    contacts and company of the customers the notes belong to). needs: "customers": the list
    exists only in accounts with Customers mode on (`GET /api/v4/account` `customers_mode`);
    elsewhere the stream reads nothing. backdated: writers may date its records back (cards,
    tasks, notes take `created_at` / `updated_at`), so wider windows are re-read on a schedule
    (`adapters.amocrm.reread`); events are stamped by amoCRM itself.
    """

    path: str
    embedded: str
    params: tuple = ()
    order: tuple = ()
    sorted_by: str | None = None
    limit: int = 250
    paged: bool = True
    gated: bool = False
    skip_on_403: str | None = None
    page_order: str | None = None
    bounded: bool = True
    lookup: str | None = None
    needs: str | None = None
    backdated: bool = True


# The customers of call notes, read back by id with their contacts and company.
CUSTOMERS = Request("/api/v4/customers", "customers", params=(("with", "contacts,companies"),), gated=True)


# -- declarations ----------------------------------------------------------------------------


def _calls(entity_path: str, **kw) -> Stream:
    """Call and SMS notes of one entity type (the stream keeps its name from when it read only
    calls: configs name it in `streams`)."""
    return Stream(
        name=f"calls_{entity_path}",
        tables=("calls", "activities"),
        mode="changes",
        cursor="updated_at",
        request=Request(
            f"/api/v4/{entity_path}/notes",
            "notes",
            params=tuple(("filter[note_type][]", t) for t in NOTE_KINDS),
            order=BY_UPDATED_AT,
            sorted_by="updated_at",
            **kw,
        ),
        parse=functools.partial(note_rows, entity=ENTITY[entity_path]),
    )


def _cards(name: str, tables: tuple, path: str, embedded: str, parse, **kw) -> Stream:
    """Leads, contacts, companies: ordered by updated_at, list filters a paid add-on."""
    return Stream(
        name=name,
        tables=tables,
        mode="changes",
        cursor="updated_at",
        parse=parse,
        request=Request(path, embedded, order=BY_UPDATED_AT, sorted_by="updated_at", gated=True, **kw),
    )


STREAMS: tuple[Stream, ...] = (
    Stream(
        name="users",
        tables=("users",),
        mode="snapshot",
        parse=user_row,
        request=Request("/api/v4/users", "users", skip_on_403="the token is not an admin's"),
    ),
    Stream(
        name="pipelines",
        tables=("pipelines", "stages"),
        mode="snapshot",
        parse=pipeline_rows,
        request=Request("/api/v4/leads/pipelines", "pipelines", paged=False),
    ),
    _cards("companies", ("companies",), "/api/v4/companies", "companies", company_row),
    _cards("contacts", ("contacts",), "/api/v4/contacts", "contacts", contact_row),
    _cards(
        "deals",
        ("deals", "deal_contacts"),
        "/api/v4/leads",
        "leads",
        deal_rows,
        params=(("with", "contacts,source"),),
    ),
    # Tasks cannot be ordered by updated_at (only by created_at, complete_till or id): order by
    # id, bookmark at the end, no upper bound (an edit mid-read keeps its place;
    # `adapters.amocrm.overlap`).
    Stream(
        name="tasks",
        tables=("tasks",),
        mode="changes",
        cursor="updated_at",
        parse=task_row,
        request=Request("/api/v4/tasks", "tasks", order=(("order[id]", "asc"),), bounded=False),
    ),
    _calls("leads"),
    _calls("contacts"),
    _calls("companies"),
    # Customers mode: a call to a contact with no open lead goes to its customer (calls API);
    # such calls are filed under the customer's main contact, else its company.
    _calls("customers", lookup="customers", needs="customers"),
    Stream(
        name="events",
        tables=("stage_changes", "deals", "contacts", "companies", "tasks", "activities", "survey_answers"),
        mode="changes",
        cursor="created_at",
        parse=event_rows,
        request=Request(
            "/api/v4/events",
            "events",
            limit=100,
            page_order="created_at",
            params=tuple(("filter[type][]", t) for t in EVENT_TYPES),
            lookup="merged_cards",
            backdated=False,
        ),
    ),
)
BY_NAME: dict[str, Stream] = {s.name: s for s in STREAMS}
