"""The write-back half of the adapter contract, in memory (write-back tests and the KPI benchmark)."""

from __future__ import annotations

from adapters.base import CrmField, WriteResult
from adapters.bitrix24.config import FIELD_PREFIX


class FakeAdapter:
    """Fields and card values in memory: batches of 50 cards per request, rejected cards retried
    alone (one more request each), `requests` counted as a real adapter would make them.

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
        self.keep_cards = keep_cards      # off for benchmarks: no copy of every value sent
        self.batches: list[tuple[str, list]] = []
        self.cards: dict[tuple[str, int], dict] = {}
        self.fail_with: Exception | None = None

    def list_fields(self, entity_type):
        self.requests += 1
        return list(self.fields[entity_type])

    def create_field(self, entity_type, code, label):
        self.requests += 1
        f = CrmField(key=self.prefix + code, name=label, type="double", code=code)
        self.fields[entity_type].append(f)
        return f

    def write_values(self, entity_type, writes):
        if self.fail_with:
            self.requests += 1
            raise self.fail_with
        out = []
        for i in range(0, len(writes), 50):
            batch = writes[i:i + 50]
            self.requests += 1
            if self.keep_cards:
                self.batches.append((entity_type, batch))
            for w in batch:
                if w.entity_id in self.reject:
                    self.requests += 1   # retried alone
                    out.append(WriteResult(w.entity_id, False, "card is locked"))
                else:
                    if self.keep_cards:
                        self.cards.setdefault((entity_type, w.entity_id), {}).update(w.values)
                    out.append(WriteResult(w.entity_id, True))
        return out
