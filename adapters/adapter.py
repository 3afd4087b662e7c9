"""What every CRM's adapter shares: `Adapter`, the base class each CRM's adapter subclasses, and
`FieldWriter`, the base class of each CRM's custom-field writer.

An adapter speaks HTTP to one CRM account and yields plain records (`adapters.base.Page`); it
never touches SQLite. `connector.sync` wires `Adapter.fetch` to the mirror, and
`connector.writeback` calls the field methods. A CRM's subclass brings only what differs: its
`crm` (the `adapters.crm.Crm` the registry lists), its HTTP client, one reader per stream mode
it reads (`readers`), its `FieldWriter` (`fields`), and `check`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable, Iterator

from adapters import bookmarks
from adapters.base import CrmField, FieldWrite, Page, WriteResult
from adapters.crm import Crm
from adapters.hooks import Change
from adapters.streams import Stream
from adapters.times import as_utc

# reader(declaration, saved bookmark (a dict, empty on a first or full read), run start in UTC)
Reader = Callable[[Stream, dict, datetime], Iterator[Page]]


class FieldWriter:
    """Custom fields on contact and company cards of one source: list, create, write values.

    A CRM's subclass lists and creates fields and sends one batch of card writes in one request
    (`send_batch`), reporting a result per card. The policy around the batches is here, one for
    every CRM: writes go `BATCH` cards a request; a card the CRM rejects in a batch is sent
    alone once more (`send_alone`), so a bad card costs one more request and its failure never
    stops the other cards.
    """

    BATCH = 50  # cards one write request carries

    def list_fields(self, entity_type: str) -> list[CrmField]:
        """Custom fields of `contact` or `company` cards."""
        raise NotImplementedError

    def create_field(self, entity_type: str, code: str, label: str, kind: str = "number") -> CrmField:
        """Create a custom field (`code` like KPI_WIN_RATE, `label` readable): numeric, or
        date-only for `kind="date"`. A date goes to `write_values` as a `datetime`, the start of
        the day in the account's time zone."""
        raise NotImplementedError

    def send_batch(self, entity_type: str, writes: list[FieldWrite]) -> list[WriteResult]:
        """One request carrying `writes` (at most `BATCH`); one result per write, in order.
        A card the CRM rejected in this batch, which may still land on its own, has
        `retry_alone` set."""
        raise NotImplementedError

    def send_alone(self, entity_type: str, write: FieldWrite) -> WriteResult:
        """One card in a request of its own: by default a batch of one."""
        return self.send_batch(entity_type, [write])[0]

    def write_values(self, entity_type: str, writes: list[FieldWrite]) -> list[WriteResult]:
        """Send `writes` in batches, each card the CRM rejected in a batch once more alone;
        one result per write, in order."""
        results: list[WriteResult] = []
        for start in range(0, len(writes), self.BATCH):
            batch = writes[start : start + self.BATCH]
            for w, r in zip(batch, self.send_batch(entity_type, batch), strict=True):
                results.append(self.send_alone(entity_type, w) if r.retry_alone else r)
        return results


class Adapter:
    """One source's adapter: its streams, their reading, its custom fields.

    A subclass sets `crm` (class attribute) and, in its constructor, calls this one with the
    source, its client (with `http`, an `adapters.http.HttpClient`, and `close()`) and its
    `FieldWriter`, then fills `readers`.
    """

    crm: Crm

    def __init__(self, source, client, fields: FieldWriter):
        self.cfg = source
        self.source = source.name  # the [[sources]] name
        self.client, self.http, self.fields = client, client.http, fields
        self.declared: dict[str, Stream] = {s.name: s for s in self.crm.declarations()}
        self.readers: dict[str, Reader] = {}  # stream mode -> its reader

    @property
    def kind(self) -> str:
        """The CRM's kind, as in the registry."""
        return self.crm.kind

    @property
    def requests(self) -> int:
        """HTTP requests made so far (every attempt counts)."""
        return self.http.requests

    def streams(self) -> list[Stream]:
        """The stream declarations in the order a full sync runs them, limited to the source's
        `streams` option (the CRM's declarations, `Crm.declarations`)."""
        return self.crm.declarations(self.cfg.streams)

    def stream_names(self) -> list[str]:
        """The names of `streams()`."""
        return list(self.crm.stream_names(self.cfg.streams))

    def check(self) -> str:
        """One cheap authenticated call; returns a one-line account description."""
        raise NotImplementedError

    def fetch(
        self, stream: str, bookmark: str | None, run_started_at: datetime, full: bool = False
    ) -> Iterator[Page]:
        """Pages of one stream from `bookmark` (None or full=True: everything), by the reader of
        the stream's mode; each page's bookmark is JSON of that mode's shape
        (`adapters.bookmarks`)."""
        s = self.declared.get(stream)
        if s is None:
            raise ValueError(
                f"unknown {self.crm.title} stream '{stream}' (known: {', '.join(self.declared)})"
            )
        reader = self.readers.get(s.mode)
        if reader is None:
            raise ValueError(f"{self.crm.title} stream '{stream}': no reader for mode '{s.mode}'")
        saved = {} if full else bookmarks.load(s.mode, bookmark)
        yield from reader(s, saved, as_utc(run_started_at))

    def list_fields(self, entity_type: str) -> list[CrmField]:
        return self.fields.list_fields(entity_type)

    def create_field(self, entity_type: str, code: str, label: str, kind: str = "number") -> CrmField:
        return self.fields.create_field(entity_type, code, label, kind)

    def write_values(self, entity_type: str, writes: list[FieldWrite]) -> list[WriteResult]:
        """See `FieldWriter.write_values`."""
        return self.fields.write_values(entity_type, writes)

    # -- change notifications (`adapters.hooks`): a CRM that has them overrides these -------

    def clear_missed(self, marker: str) -> None:
        """Acknowledge the changes `missed_changes` returned with `marker`."""
        raise NotImplementedError

    def install_hooks(self, url: str) -> str:
        """Have the CRM notify `url` of changes; returns a one-line description."""
        raise NotImplementedError

    def missed_changes(self) -> tuple[list[Change], str] | None:
        """Changes the CRM queued while nobody listened, and the marker to clear them by
        (`clear_missed`); None when it keeps no such queue for this source (then an
        incremental sync catches up)."""
        raise NotImplementedError

    def parse_hook(self, pairs: list[tuple[str, str]]) -> list[Change]:
        """The changes one delivery (its form pairs) names; `HookRefused` if not genuine."""
        raise NotImplementedError

    def read_changes(self, changes: list[Change]) -> Page:
        """The changed records read back by id as mirror rows; ids the CRM no longer has in
        `Page.deleted`."""
        raise NotImplementedError

    def remove_hooks(self, url: str) -> str:
        """Stop the CRM notifying `url`; returns a one-line description."""
        raise NotImplementedError

    def watch(self, stop) -> None:
        """Obey `stop` (a threading.Event set by SIGTERM) in every wait and before every
        request from now on: the call under way raises `adapters.errors.Interrupted`."""
        self.http.watch(stop)
        watch = getattr(self.client, "watch", None)
        if watch is not None:
            watch(stop)

    def close(self) -> None:
        self.client.close()
