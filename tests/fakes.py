"""The write-back half of the adapter contract, in memory (write-back tests and the KPI benchmark)."""

from __future__ import annotations

from adapters.adapter import FieldWriter
from adapters.base import CrmField, WriteResult
from adapters.bitrix24.config import FIELD_PREFIX


class FakeAdapter(FieldWriter):
    """Fields and card values in memory: batches of 50 cards per request, `requests` counted as a
    real adapter would make them. A `reject`ed card is refused in its batch and again alone (the
    write policy of `FieldWriter.write_values`: one more request each).

    Its fields are keyed as Bitrix24 keys them (`UF_CRM_<code>`), so it is of that kind: write-back
    matches them by that CRM's `field_has_code`.
    """

    kind = "bitrix24"
    prefix = FIELD_PREFIX

    def __init__(self, source: str = "main", fields=None, reject=(), keep_cards: bool = True):
        self.source = source
        self.requests = 0
        self.fields = {"contact": list(fields or []), "company": []}
        self.reject = set(reject)
        self.keep_cards = keep_cards  # off for benchmarks: no copy of every value sent
        self.batches: list[tuple[str, list]] = []
        self.cards: dict[tuple[str, int], dict] = {}
        self.fail_with: Exception | None = None

    def list_fields(self, entity_type):
        self.requests += 1
        return list(self.fields[entity_type])

    def create_field(self, entity_type, code, label, kind="number"):
        self.requests += 1
        f = CrmField(
            key=self.prefix + code, name=label, type="date" if kind == "date" else "double", code=code
        )
        self.fields[entity_type].append(f)
        return f

    def send_batch(self, entity_type, writes):
        self.requests += 1
        if self.fail_with:
            raise self.fail_with
        if self.keep_cards:
            self.batches.append((entity_type, writes))
        return [self._write(entity_type, w, retry_alone=True) for w in writes]

    def send_alone(self, entity_type, write):
        self.requests += 1
        return self._write(entity_type, write)

    def _write(self, entity_type, w, retry_alone=False):
        if w.entity_id in self.reject:
            return WriteResult(w.entity_id, False, "card is locked", retry_alone=retry_alone)
        if self.keep_cards:
            self.cards.setdefault((entity_type, w.entity_id), {}).update(w.values)
        return WriteResult(w.entity_id, True)
