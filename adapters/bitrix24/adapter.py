"""The Bitrix24 adapter: streams into the mirror, custom fields, write-back.

Streams are declared in `adapters.bitrix24.streams`; `Adapter.fetch` hands a declaration to
the reader of its mode (`adapters.bitrix24.reading`), which knows the bookmarks.
"""

from __future__ import annotations

from adapters.adapter import Adapter
from adapters.bitrix24 import CRM, auth
from adapters.bitrix24.client import Bitrix24Client
from adapters.bitrix24.fields import FieldWriter
from adapters.bitrix24.listing import Lister
from adapters.bitrix24.paging import Pager
from adapters.bitrix24.reading import Reader


class Bitrix24Adapter(Adapter):
    crm = CRM

    def __init__(self, source, tokens=None, client: Bitrix24Client | None = None, limits=None):
        client = client or Bitrix24Client(source, tokens, limits=limits)
        super().__init__(source, client, FieldWriter(client))
        self.pager = Pager(self.client, self.client.throttle.ceiling)
        self.reader = Reader(source, Lister(self.client, self.pager), self.declared)
        self.readers = self.reader.modes

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
