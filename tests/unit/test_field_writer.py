"""The write policy every CRM's field writer shares (`adapters.adapter.FieldWriter`)."""

from adapters.adapter import FieldWriter
from adapters.base import FieldWrite, WriteResult


class Script(FieldWriter):
    """Batches of 3; card 2 is rejected in its batch but lands alone, card 5 fails for good
    (no retry), card 7 is rejected in its batch and alone."""

    BATCH = 3

    def __init__(self):
        self.sent: list[tuple[str, list[int]]] = []

    def send_batch(self, entity_type, writes):
        self.sent.append(("batch", [w.entity_id for w in writes]))
        return [
            WriteResult(w.entity_id, False, "rejected", retry_alone=True)
            if w.entity_id in (2, 7)
            else WriteResult(w.entity_id, False, "gone")
            if w.entity_id == 5
            else WriteResult(w.entity_id, True)
            for w in writes
        ]

    def send_alone(self, entity_type, write):
        self.sent.append(("alone", [write.entity_id]))
        return WriteResult(write.entity_id, write.entity_id != 7, None if write.entity_id != 7 else "still")


def test_batches_then_each_rejected_card_once_alone_results_in_order():
    w = Script()
    results = w.write_values("contact", [FieldWrite(i, {"k": 1.0}) for i in range(1, 8)])
    assert w.sent == [
        ("batch", [1, 2, 3]),
        ("alone", [2]),
        ("batch", [4, 5, 6]),
        ("batch", [7]),
        ("alone", [7]),
    ]
    assert [(r.entity_id, r.ok, r.error) for r in results] == [
        (1, True, None),
        (2, True, None),
        (3, True, None),
        (4, True, None),
        (5, False, "gone"),
        (6, True, None),
        (7, False, "still"),
    ]
