"""Shared helpers for the amoCRM adapter tests (responses mocks, adapter factory); no tests here."""

import json
from datetime import datetime, timezone
from urllib.parse import parse_qsl, urlsplit

import responses

from adapters.amocrm.adapter import AmoCrmAdapter
from connector.config import SourceConfig
from connector.tokens import TokenStore

BASE = "https://acme.amocrm.ru"
TOKEN = "LLTOKEN-secret-0123456789"
RUN = datetime(2026, 11, 23, 10, 0, 0, tzinfo=timezone.utc)
RUN_TS = int(RUN.timestamp())


def make_adapter(tmp_path, **kw) -> AmoCrmAdapter:
    cfg = dict(name="main", kind="amocrm", base_url=BASE, access_token=TOKEN,
               requests_per_second=1000.0, max_workers=3)
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
    def callback(request):
        page = int(dict(parse_qsl(urlsplit(request.url).query)).get("page", 1))
        body = pages[page - 1] if page <= len(pages) else None
        if body is None:
            return 204, {}, ""
        return 200, {"Content-Type": "application/hal+json"}, json.dumps(body)
    responses.add_callback(responses.GET, BASE + path, callback=callback)


def calls_to(path: str) -> list:
    return [c for c in responses.calls if urlsplit(c.request.url).path == path]


def fetch_all(adapter, stream, bookmark=None, full=False, run=RUN):
    return list(adapter.fetch(stream, bookmark, run, full=full))


def rows(pages, table) -> list[dict]:
    return [r for p in pages for r in p.rows.get(table, [])]
