"""One call vocabulary for both CRMs (docs/mirror.md, `calls`).

`answered` = a conversation took place; `missed` = an incoming call nobody answered; `failed`
= an outgoing call that did not connect. The same call, read from amoCRM's note or from
Bitrix24's `voximplant.statistic.get`, gets the same status; `missed_calls_90d` counts
incoming unanswered calls only.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from adapters.amocrm.streams import BY_NAME as AMO
from adapters.bitrix24.streams import CALLS as B24
from adapters.streams import Ctx, records
from connector.config.kpi import KpiConfig
from connector.kpi import engine as kpi
from connector.mirror.store import Mirror

# outcome -> (amoCRM call_status, Bitrix24 CALL_FAILED_CODE), both from the API notes.
OUTCOMES = {
    "talked": (4, "200"),
    "no_answer": (6, "304"),
    "busy": (7, "486"),
    "declined": (3, "603"),
    "cancelled": (2, "603-S"),
    "wrong_number": (5, "404"),
    "message_left": (1, "480"),
    "undefined": (8, "OTHER"),
}
EXPECTED = {
    ("in", "talked"): "answered",
    ("out", "talked"): "answered",
    **{("in", o): "missed" for o in OUTCOMES if o != "talked"},
    **{("out", o): "failed" for o in OUTCOMES if o != "talked"},
}
CASES = sorted(EXPECTED)


def amo_status(direction: str, outcome: str, duration: int = 0) -> str:
    note = {
        "id": 1,
        "entity_id": 5,
        "note_type": f"call_{direction}",
        "created_at": 1763892000,
        "params": {"duration": duration, "call_status": OUTCOMES[outcome][0]},
    }
    return records([note], AMO["calls_contacts"].parse, Ctx()).rows["calls"][0]["status"]


def b24_status(direction: str, outcome: str, call_type: int | None = None) -> str:
    item = {
        "ID": "7",
        "CALL_TYPE": str(call_type or (1 if direction == "out" else 2)),
        "CALL_FAILED_CODE": OUTCOMES[outcome][1],
        "CALL_DURATION": "0",
        "CALL_START_DATE": "2026-11-23T12:00:00+03:00",
        "CRM_ENTITY_TYPE": "CONTACT",
        "CRM_ENTITY_ID": "5",
    }
    return records([item], B24.parse, Ctx()).rows["calls"][0]["status"]


@pytest.mark.parametrize("direction,outcome", CASES)
def test_amocrm_call_status_follows_the_shared_vocabulary(direction, outcome):
    assert amo_status(direction, outcome) == EXPECTED[direction, outcome]


@pytest.mark.parametrize("direction,outcome", CASES)
def test_bitrix24_call_status_follows_the_shared_vocabulary(direction, outcome):
    assert b24_status(direction, outcome) == EXPECTED[direction, outcome]


def test_bitrix24_incoming_with_redirection_is_incoming():
    assert b24_status("in", "no_answer", call_type=3) == "missed"


@pytest.mark.parametrize(
    "direction,duration,status",
    [("in", 30, "answered"), ("out", 30, "answered"), ("in", 0, "missed"), ("out", 0, "failed")],
)
def test_amocrm_note_without_call_status_goes_by_duration(direction, duration, status):
    note = {
        "id": 1,
        "entity_id": 5,
        "note_type": f"call_{direction}",
        "created_at": 1763892000,
        "params": {"duration": duration},
    }
    assert records([note], AMO["calls_contacts"].parse, Ctx()).rows["calls"][0]["status"] == status


def test_missed_calls_90d_counts_incoming_unanswered_calls_only():
    """An outgoing row marked `missed` (as amoCRM mirrors stored them before) is not missed."""
    now = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
    m = Mirror(":memory:")
    m.db["contacts"].insert({"source": "main", "id": 1, "name": "c", "is_deleted": 0})
    calls = [(1, "in", "missed"), (2, "out", "missed"), (3, "out", "failed"), (4, "in", "answered")]
    m.db["calls"].insert_all(
        [
            dict(
                source="main",
                id=i,
                entity_type="contact",
                entity_id=1,
                direction=d,
                status=s,
                duration_s=0,
                started_at="2026-11-20T00:00:00Z",
                is_deleted=0,
            )
            for i, d, s in calls
        ]
    )
    kpi.compute(m, "main", KpiConfig(), now=now)
    v = {r["kpi"]: r["value"] for r in kpi.latest(m, "main", "contact", 1)}
    assert v["calls_90d"] == 4 and v["missed_calls_90d"] == 1
