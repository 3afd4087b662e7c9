"""The Bitrix24 adapter: streams into the mirror, custom fields, write-back.

Streams are declared in `adapters.bitrix24.streams`; `fetch` hands a declaration to the
reader of its mode (`adapters.bitrix24.reading`), which knows the bookmarks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterator

from adapters.base import CrmField, FieldWrite, Page, WriteResult
from adapters.bitrix24 import auth
from adapters.bitrix24 import fields as uf
from adapters.bitrix24.client import Bitrix24Client
from adapters.bitrix24.listing import Lister
from adapters.bitrix24.paging import Pager
from adapters.bitrix24.reading import Reader
from adapters.bitrix24.streams import STREAMS
from adapters.errors import StreamError
from adapters.streams import Stream, narrowed


class Bitrix24Adapter:
    kind = "bitrix24"

    def __init__(self, source, tokens=None, client: Bitrix24Client | None = None, limits=None):
        self.cfg = source
        self.source = source.name
        self.client = client or Bitrix24Client(source, tokens, limits=limits)
        self.pager = Pager(self.client, self.client.throttle.ceiling)
        self.reader = Reader(source, Lister(self.client, self.pager), {s.name: s for s in STREAMS})

    @property
    def requests(self) -> int:
        return self.client.requests

    def streams(self) -> list[Stream]:
        """Declarations in run order (only the configured ones, when `streams` is set)."""
        return narrowed(STREAMS, self.cfg.streams)

    def stream_names(self) -> list[str]:
        return [s.name for s in self.streams()]

    def check(self) -> str:
        r = self.client.call("profile").get("result") or {}
        who = " ".join(p for p in (r.get("NAME"), r.get("LAST_NAME")) if p) or "?"
        how = "webhook" if self.client.uses_webhook else "OAuth"
        return (f"Bitrix24 portal {self.client.host()} via {how}, user {who} (id {r.get('ID')}"
                f"{', admin' if r.get('ADMIN') else ''})")

    def exchange_code(self, code: str) -> str:
        return self.client.exchange_code(code)

    def sign_in(self, say, timeout_s: float | None = None) -> str:
        """OAuth in the browser: show the URL, catch the 30-second code, exchange it at once."""
        return auth.sign_in(self.client, say, *(() if timeout_s is None else (timeout_s,)))

    def close(self) -> None:
        self.client.close()

    def fetch(self, stream: str, bookmark: str | None, run_started_at: datetime,
              full: bool = False) -> Iterator[Page]:
        declared = self.reader.declared.get(stream)
        if declared is None:
            raise StreamError(f"Bitrix24 source '{self.source}': unknown stream '{stream}'")
        yield from self.reader.read(declared, bookmark, run_started_at, full)

    # ---- custom fields -------------------------------------------------------------------

    def list_fields(self, entity_type: str) -> list[CrmField]:
        return uf.list_fields(self.client, entity_type)

    def create_field(self, entity_type: str, code: str, label: str) -> CrmField:
        return uf.create_field(self.client, entity_type, code, label)

    def write_values(self, entity_type: str, writes: list[FieldWrite]) -> list[WriteResult]:
        return uf.write_values(self.client, entity_type, writes)
