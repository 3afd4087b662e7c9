"""Shared helpers for the amoCRM adapter tests (responses mocks, adapter factory); no tests here."""

import json
from datetime import datetime, timezone
from urllib.parse import parse_qsl, urlsplit

import responses

from adapters.amocrm.adapter import AmoCrmAdapter
from connector.config.loader import SourceConfig
from connector.mirror.tokens import TokenStore

BASE = "https://acme.amocrm.ru"
TOKEN = "LLTOKEN-secret-0123456789"
RUN = datetime(2026, 11, 23, 10, 0, 0, tzinfo=timezone.utc)
RUN_TS = int(RUN.timestamp())


def make_adapter(tmp_path, **kw) -> AmoCrmAdapter:
    cfg = dict(
        name="main",
        kind="amocrm",
        base_url=BASE,
        access_token=TOKEN,
        requests_per_second=1000.0,
        max_workers=3,
    )
    cfg.update(kw)
    adapter = AmoCrmAdapter(SourceConfig(**cfg), TokenStore(str(tmp_path / "tokens.json")))
    adapter.http.slept = []
    adapter.http.sleep = adapter.http.slept.append
    return adapter


def query(call) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(call.request.url).query)


def qdict(call) -> dict:
    return dict(query(call))


def hal(embedded: str, items: list, next_page: bool = False) -> dict:
    body = {"_page": 1, "_links": {"self": {"href": "x"}}, "_embedded": {embedded: items}}
    if next_page:
        body["_links"]["next"] = {"href": "next"}
    return body


def serve_pages(path: str, pages: list):
    """Register a GET on BASE+path answering `pages[page-1]` (a dict, or None for 204);
    pages past the end answer 204."""
    served = []

    def callback(request):
        served.append(request.url)
        q = dict(parse_qsl(urlsplit(request.url).query))
        page = int(q.get("page", 1))
        body = pages[page - 1] if page <= len(pages) else None
        if _first_size(pages) > int(q.get("limit", 250)):  # an overlapping page
            body = _offset_page(pages, page, int(q["limit"]))
        if (
            len(served) > 1 and q.get("order[updated_at]") == "asc" and "filter[updated_at][from]" in q
        ):  # a keyset restart
            body = _keyset_page(
                pages,
                int(q["filter[updated_at][from]"]),
                int(q.get("filter[updated_at][to]", 2**40)),
                page,
                int(q.get("limit", 250)),
            )
        if body is None:
            return 204, {}, ""
        return 200, {"Content-Type": "application/hal+json"}, json.dumps(body)

    responses.add_callback(responses.GET, BASE + path, callback=callback)


def _listed(pages: list) -> list:
    """The items of the whole listing: the pages up to the first without a next link."""
    items = []
    for p in pages:
        if not p:
            break
        items += p["_embedded"][next(iter(p["_embedded"]))]
        if not p["_links"].get("next"):
            break
    return items


def _first_size(pages: list) -> int:
    first = pages[0] if pages else None
    return len(first["_embedded"][next(iter(first["_embedded"]))]) if first and first.get("_embedded") else 0


def _offset_page(pages: list, page: int, limit: int) -> dict | None:
    """What a real list answers to `page=N&limit=L` with L below its page size: the items
    from row (N-1)*L on, L of them; None (204) past the end."""
    items = _listed(pages)
    key = next(iter(pages[0]["_embedded"]))
    chunk = items[(page - 1) * limit : page * limit]
    return hal(key, chunk, next_page=len(items) > page * limit) if chunk else None


def _keyset_page(pages: list, lo: int, hi: int, page: int, limit: int) -> dict | None:
    """What a real list answers to `[from]=lo&page=N&limit=L`: the served items (already
    ascending) from `lo` on, cut into pages of L (at most the first page's size, the list's
    page size here); None (204) past the end."""
    if any(p and not p.get("_embedded") for p in pages):
        return pages[page - 1] if page <= len(pages) else None
    items = _listed(pages)
    if not items or any("updated_at" not in i for i in items):
        return pages[page - 1] if page <= len(pages) else None
    key = next(iter(next(p for p in pages if p)["_embedded"]))
    size = min(limit, len(pages[0]["_embedded"][key]) if pages[0] else 250)
    left = [i for i in items if lo <= i["updated_at"] <= hi]
    chunk = left[(page - 1) * size : page * size]
    if not chunk:
        return None
    return hal(key, chunk, next_page=len(left) > page * size)


def calls_to(path: str) -> list:
    return [c for c in responses.calls if urlsplit(c.request.url).path == path]


def fetch_all(adapter, stream, bookmark=None, full=False, run=RUN):
    return list(adapter.fetch(stream, bookmark, run, full=full))


def rows(pages, table) -> list[dict]:
    return [r for p in pages for r in p.rows.get(table, [])]
