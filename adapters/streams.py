"""The stream contract, one for every CRM.

A stream is a declaration: its name, the mirror tables it feeds (each with its storage contract,
primary key and write rules, declared once in `adapters.tables`), what to ask the CRM for
(`request`, in the CRM's own terms), the field incremental reads filter on (`cursor`), how it
is read (`mode`), a parser from one API item to mirror records, and the `scope` the
credentials need for it where the CRM has scopes (shown by `check`). Each CRM supplies only how
to read pages for a declaration, one reader per mode; it never branches on a stream's name.

Modes (each with its bookmark shape, see `adapters.bookmarks`):
- `snapshot`: the whole (small) collection every run: users, pipelines.
- `changes`: rows changed since the bookmark (minus an overlap), upserted: deals, contacts...
- `append`: rows after the last id seen; rows never change once written: calls, stage history.
- `reconcile`: lists every id the CRM still has; rows missing from it are marked deleted.

A parser is `parse(item, ctx) -> Page`: the item's records (one item may feed several tables,
or mark rows deleted). It does no I/O; what it needs beyond the item comes in `ctx`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from adapters.base import Page
from adapters.errors import StreamError
from adapters.tables import TABLES
from adapters.values import BadItem, FieldError, problem

MODES = ("snapshot", "changes", "append", "reconcile")


@dataclass
class Ctx:
    """What a parser may know besides the item.

    currency: the source's currency (amoCRM deals carry none). memo: per-fetch memory, for
    records that depend on items read before (the previous stage of a deal; the newest
    deletion event of a card). side: per-page lookups the reader made beside the items
    (a call's activity, a deal's contact ids), keyed by item id.
    """

    currency: str = "RUB"
    memo: dict = field(default_factory=dict)
    side: dict = field(default_factory=dict)


Parser = Callable[[dict, Ctx], Page]


@dataclass(frozen=True)
class Stream:
    """One stream, declared. `request` is the CRM's own description of what to ask for.
    `tables` names mirror tables declared in `adapters.tables`, the first its main one."""

    name: str
    tables: tuple[str, ...]
    mode: str
    request: object
    parse: Parser | None = None
    cursor: str | None = None
    scope: str | None = None  # the permission the CRM wants for it (Bitrix24: crm, task, ...)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"stream '{self.name}': unknown mode '{self.mode}' (one of {MODES})")
        undeclared = [t for t in self.tables if t not in TABLES]
        if undeclared:
            raise ValueError(
                f"stream '{self.name}': tables {undeclared} have no storage contract in adapters.tables"
            )


def records(items: Iterable[dict], parse: Parser, ctx: Ctx, stream: str = "?") -> Page:
    """One page of items parsed, in order, into one `Page`. An item whose id an earlier item of
    the page carried is skipped and reported: it may be another card's data under that id.
    An item a row cannot be made of is skipped and reported (`BadItem`); an unexpected error
    fails the page with a `StreamError` naming the stream, the item and the field."""
    page, seen = Page(), set()
    for n, item in enumerate(items, 1):
        key, ident = _own_id(item)
        if key is not None and str(ident).strip() in seen:
            page.problems.append(
                {
                    **problem(
                        key,
                        ident,
                        "the page carries this id twice: the first item kept, this one not stored",
                        skipped=True,
                    ),
                    "item": ident,
                }
            )
            continue
        if key is not None:
            seen.add(str(ident).strip())
        page.merge(parse_item(item, parse, ctx, stream, n))
    return page


def _own_id(item) -> tuple[str | None, object]:
    """(the key, the value) of an item's own id as sent, (None, None) when it has none."""
    if isinstance(item, dict):
        for key in ("ID", "id"):
            if isinstance(item.get(key), (int, str)) and item[key] != "":
                return key, item[key]
    return None, None


def item_id(item, n: int | None = None):
    """What a report calls an item: its id, else its place on the page."""
    if isinstance(item, dict):
        for key in ("ID", "id"):
            if item.get(key) not in (None, ""):
                return item[key] if isinstance(item[key], (int, str)) else repr(item[key])[:40]
    return f"#{n} on the page" if n else None


def parse_item(item, parse: Parser, ctx: Ctx, stream: str, n: int | None = None) -> Page:
    """One item through `parse`; its problems carry the item's id."""
    ident = item_id(item, n)
    try:
        page = parse(item, ctx)
    except BadItem as err:
        page = Page(problems=[err.problem])
    except FieldError as err:
        raise StreamError(f"stream '{stream}': cannot read item {ident}, {err}") from None
    except Exception as err:
        raise StreamError(
            f"stream '{stream}': cannot read item {ident}: unexpected {type(err).__name__}: {str(err)[:80]}"
        ) from None
    for p in page.problems:
        p.setdefault("item", ident)
    return page


def rows(table: str, *records: dict) -> Page:
    """A parser's usual answer: records for one table."""
    return Page(rows={table: list(records)})


def narrowed(declared, wanted) -> list[Stream]:
    """`declared` in run order, only those named in `wanted` when it is set (a source's
    `streams` option)."""
    return [s for s in declared if not wanted or s.name in wanted]
