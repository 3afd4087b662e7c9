"""Reading records back by id after a webhook named them (`AmoCrmAdapter.read_changes`).

One list request per `CHUNK` ids: `filter[id][]=...` on the stream's own list endpoint, with
the stream's own params (`with=contacts,source` for leads), so the items are the ones a sync
parses. An id the filtered list does not serve is gone (deleted, or merged away): lists never
serve the trash.

`filter[id]` on leads, contacts and companies is part of amoCRM's paid list-filter add-on
(its filters page lists it with the others); an account without it ignores the filter and
serves the unfiltered list. So those lists are also asked newest-first (`order[updated_at]=
desc`), where a card just changed comes first, and an answer is trusted only when it is
conclusive: every item served was asked for (the filter worked), or it is the whole list (no
`next` page). Otherwise each id it did not bring is read alone (`GET {path}/{id}`; 204: gone).
Tasks document `filter[id]` on their own page, outside the add-on.
"""

from __future__ import annotations

from adapters.amocrm.streams import Request
from adapters.errors import StreamError
from adapters.values import to_int

CHUNK = 100  # ids per list request: the answer fits one page (limit 250), the URL stays short


def read_back(client, req: Request, ids: list[int], label: str) -> tuple[list[dict], list[int]]:
    """(the items found, in the order of `ids`; the ids the account no longer has)."""
    found: dict[int, dict] = {}
    absent, unsure = [], []
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        params = [("limit", req.limit), *req.params, *(("filter[id][]", i) for i in chunk)]
        if req.gated:
            params.append(("order[updated_at]", "desc"))
        data = client.page(req, params, 1, label)
        items = data["_embedded"][req.embedded] if data else []
        wanted, stray = set(chunk), False
        for item in items:
            got = to_int(item.get("id")) if isinstance(item, dict) else None
            if got in wanted:
                found.setdefault(got, item)
            else:
                stray = True  # not asked for (the filter was ignored), or no readable id
        conclusive = not stray or not (data.get("_links") or {}).get("next")
        missing = [i for i in chunk if i not in found]
        (absent if conclusive and not _unreadable(items) else unsure).extend(missing)
    for i in unsure:
        _, item = client.send("GET", f"{req.path}/{i}", params=list(req.params), what=f"{label}, id {i}")
        if item is None:
            absent.append(i)
        elif isinstance(item, dict):
            found[i] = item
        else:
            raise StreamError(
                f"amoCRM source '{client.source}', {label}, id {i}: unexpected answer shape (not an object)"
            )
    gone = set(absent)
    return [found[i] for i in ids if i in found], [i for i in ids if i in gone]


def _unreadable(items: list) -> bool:
    """An item whose id cannot be read may be one of those asked for: not conclusive."""
    return any(not isinstance(i, dict) or to_int(i.get("id")) is None for i in items)
