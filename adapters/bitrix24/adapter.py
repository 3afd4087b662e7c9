"""The Bitrix24 adapter: streams into the mirror, custom fields, write-back, event handlers.

Streams are declared in `adapters.bitrix24.streams`; `Adapter.fetch` hands a declaration to
the reader of its mode (`adapters.bitrix24.reading`), which knows the bookmarks. Event
deliveries are parsed in `adapters.bitrix24.events`, read back in `adapters.bitrix24.readback`;
handlers and the offline queue are `adapters.bitrix24.subscribe`'s.
"""

from __future__ import annotations

from adapters import redact
from adapters.adapter import Adapter
from adapters.base import Page
from adapters.bitrix24 import CRM, auth, events, subscribe
from adapters.bitrix24.client import Bitrix24Client
from adapters.bitrix24.fields import FieldWriter
from adapters.bitrix24.listing import Lister
from adapters.bitrix24.paging import Pager
from adapters.bitrix24.readback import ChangeReader
from adapters.bitrix24.reading import Reader
from adapters.hooks import Change


class Bitrix24Adapter(Adapter):
    crm = CRM

    def __init__(self, source, tokens=None, client: Bitrix24Client | None = None, limits=None):
        client = client or Bitrix24Client(source, tokens, limits=limits)
        super().__init__(source, client, FieldWriter(client))
        self.pager = Pager(self.client, self.client.throttle.ceiling)
        self.reader = Reader(source, Lister(self.client, self.pager), self.declared)
        self.readers = self.reader.modes
        redact.register(source.application_token)
        self.readback = ChangeReader(
            self.client, self.reader.lister, self.reader, {s.name: s for s in self.streams()}
        )

    def check(self) -> str:
        r = self.client.call("profile").get("result") or {}
        who = " ".join(p for p in (r.get("NAME"), r.get("LAST_NAME")) if p) or "?"
        how = "webhook" if self.client.uses_webhook else "OAuth"
        return (
            f"Bitrix24 portal {self.client.host()} via {how}, user {who} (id {r.get('ID')}"
            f"{', admin' if r.get('ADMIN') else ''})"
        )

    def exchange_code(self, code: str) -> str:
        return self.client.exchange_code(code)

    def sign_in(self, say, timeout_s: float | None = None) -> str:
        """OAuth in the browser: show the URL, catch the 30-second code, exchange it at once."""
        return auth.sign_in(self.client, say, *(() if timeout_s is None else (timeout_s,)))

    # ---- events ---------------------------------------------------------------------------

    def parse_hook(self, pairs: list[tuple[str, str]]) -> list[Change]:
        """A delivery to the event handler -> its Change; `HookRefused` unless its
        auth[application_token] is the source's `application_token`."""
        return events.parse_delivery(pairs, self.cfg.application_token, self.source)

    def read_changes(self, changes: list[Change]) -> Page:
        """The changed records read back by id, in one batch for up to ~2,500 ids, as the rows
        a sync writes; ids the portal no longer has -> `Page.deleted`."""
        return self.readback.read(changes)

    def install_hooks(self, url: str) -> str:
        """event.bind (online to `url`, and offline) for every followed event; a webhook-auth
        source cannot: the error says how to set up an outgoing webhook instead."""
        return subscribe.install(self.client, url)

    def remove_hooks(self, url: str) -> str:
        return subscribe.remove(self.client, url)

    def missed_changes(self) -> tuple[list[Change], str] | None:
        """Up to 50 changed records from the offline queue (kept there until `clear_missed`),
        and the process id to clear them by; None for a webhook-auth source."""
        return subscribe.missed(self.client)

    def clear_missed(self, process_id: str) -> None:
        subscribe.clear(self.client, process_id)
