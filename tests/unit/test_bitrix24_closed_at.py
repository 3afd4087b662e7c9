"""A Bitrix24 deal's or lead's `closed_at` is the moment it entered its final stage.

The parsers take `MOVED_TIME` (else the close date) from the item; the stage history comes
in a stream of its own, and the mirror refines `closed_at` from it once both are saved,
whichever arrives first, and keeps it when the deal is read again.
"""

from __future__ import annotations

from adapters.bitrix24 import parsers as p
from adapters.streams import Ctx
from connector.mirror.store import Mirror

DEAL = {
    "ID": "37",
    "TITLE": "Order",
    "CATEGORY_ID": "0",
    "STAGE_ID": "WON",
    "STAGE_SEMANTIC_ID": "S",
    "CLOSED": "Y",
    "DATE_CREATE": "2026-11-20T12:00:00+03:00",
    "DATE_MODIFY": "2026-11-20T19:00:00+03:00",
    "CLOSEDATE": "2026-11-20T00:00:00+03:00",
    "MOVED_TIME": "2026-11-20T18:43:00+03:00",
}
LEAD = {
    "ID": "8",
    "TITLE": "Request",
    "STATUS_ID": "CONVERTED",
    "STATUS_SEMANTIC_ID": "S",
    "DATE_CREATE": "2026-11-20T12:00:00+03:00",
    "DATE_MODIFY": "2026-11-20T19:00:00+03:00",
    "DATE_CLOSED": "2026-11-20T18:43:00+03:00",
}


def history(owner: str, *moves: tuple[int, str, str], lead: bool = False) -> list[dict]:
    key, sem = ("STATUS_ID", "STATUS_SEMANTIC_ID") if lead else ("STAGE_ID", "STAGE_SEMANTIC_ID")
    return [
        {
            "ID": str(i),
            "TYPE_ID": "3",
            "OWNER_ID": owner,
            "CATEGORY_ID": "0",
            key: stage,
            sem: "S" if stage in ("WON", "CONVERTED") else "P",
            "CREATED_TIME": at,
        }
        for i, stage, at in moves
    ]


def save(m: Mirror, stream: str, parse, items: list[dict]) -> None:
    page = None
    memo: dict = {}
    for item in items:
        one = parse(item, Ctx(memo=memo))
        page = one if page is None else page.merge(one)
    m.save_page("b24", stream, page)


def closed(m: Mirror, table: str, i: int) -> str:
    return m.conn.execute(f"SELECT closed_at FROM {table} WHERE id = ?", (i,)).fetchone()[0]


def test_stage_history_wins_over_moved_time_in_either_order_and_on_re_reads():
    won = history("37", (1, "NEW", "2026-11-20T12:00:00+03:00"), (2, "WON", "2026-11-20T18:42:00+03:00"))
    with Mirror(":memory:") as m:
        save(m, "deals", p.deal, [DEAL])
        assert closed(m, "deals", 37) == "2026-11-20T15:43:00Z"  # MOVED_TIME until the history is in
        save(m, "stage_history", p.stage_change, won)
        assert closed(m, "deals", 37) == "2026-11-20T15:42:00Z"
        save(m, "deals", p.deal, [DEAL])  # read again after a change
        assert closed(m, "deals", 37) == "2026-11-20T15:42:00Z"
    with Mirror(":memory:") as m:
        save(m, "stage_history", p.stage_change, won)
        save(m, "deals", p.deal, [DEAL])
        assert closed(m, "deals", 37) == "2026-11-20T15:42:00Z"


def test_history_that_has_not_caught_up_leaves_the_items_moment():
    # Won long ago, reopened, won again: the history seen so far ends with the reopening.
    behind = history("37", (1, "WON", "2026-10-01T10:00:00+03:00"), (2, "NEW", "2026-11-01T10:00:00+03:00"))
    with Mirror(":memory:") as m:
        save(m, "stage_history", p.stage_change, behind)
        save(m, "deals", p.deal, [DEAL])
        assert closed(m, "deals", 37) == "2026-11-20T15:43:00Z"
        reopened = dict(DEAL, STAGE_ID="NEW", STAGE_SEMANTIC_ID="P", CLOSED="N")
        save(m, "deals", p.deal, [reopened])
        assert closed(m, "deals", 37) is None


def test_leads_close_at_their_history_move_too():
    moves = history(
        "8", (1, "NEW", "2026-11-20T12:00:00+03:00"), (2, "CONVERTED", "2026-11-20T18:41:30+03:00"), lead=True
    )
    with Mirror(":memory:") as m:
        save(m, "leads", p.lead, [LEAD])
        assert closed(m, "leads", 8) == "2026-11-20T15:43:00Z"
        save(m, "stage_history", p.stage_change, moves)
        assert closed(m, "leads", 8) == "2026-11-20T15:41:30Z"
