"""What counts as a client's interaction or call: every record an activity is bound to, a
manager's calls only (not automated ones), and only activities done or due (not planned ones
ahead). On the hand-built mirror of test_kpi (contacts 1-4, companies 10 and 11, deal 102 of
company 10 shared by contacts 1 and 4, open deal 106 of contact 3 created 2026-10-01)."""

from __future__ import annotations

import pytest

from connector.config.kpi import KpiConfig
from connector.kpi import engine as kpi
from tests.unit.test_kpi import NOW, S, build_mirror, values


def activity(id, channel, direction, at, entity_type, entity_id, is_completed=1):
    return dict(
        source=S,
        id=id,
        channel=channel,
        direction=direction,
        at=at,
        entity_type=entity_type,
        entity_id=entity_id,
        is_completed=is_completed,
        is_deleted=0,
    )


def call(id, entity_type, entity_id, direction, started_at, activity_id, is_automated=0):
    return dict(
        source=S,
        id=id,
        entity_type=entity_type,
        entity_id=entity_id,
        direction=direction,
        status="answered",
        duration_s=60,
        started_at=started_at,
        activity_id=activity_id,
        is_automated=is_automated,
        is_deleted=0,
    )


def bind(activity_id, *records):
    return [dict(source=S, activity_id=activity_id, entity_type=t, entity_id=i) for t, i in records]


@pytest.fixture
def mirror():
    m = build_mirror()
    yield m
    m.close()


def run(m):
    return kpi.compute(m, S, KpiConfig(currency_rates={"USD": 90.0}), now=NOW)


def test_an_activity_counts_for_every_record_it_is_bound_to(mirror):
    db = mirror.db
    # An e-mail owned by contact 2, also about deal 102 (contacts 1, 4; company 10) and company 11.
    db["activities"].insert(activity("b1", "email", "in", "2026-11-20T10:00:00Z", "contact", 2))
    db["activity_bindings"].insert_all(bind("b1", ("contact", 2), ("deal", 102), ("company", 11)))
    # A call on a lead whose activity is also bound to contact 4 and company 11 (voximplant
    # names the lead; the bindings say who else it concerns).
    db["activities"].insert(activity("b2", "call", "out", "2026-11-15T10:00:00Z", "lead", 900))
    db["activity_bindings"].insert_all(bind("b2", ("lead", 900), ("contact", 4), ("company", 11)))
    db["calls"].insert(call(7, "lead", 900, "out", "2026-11-15T10:00:00Z", "b2"))
    # Contact 1's own call 1, bound to its card and to deal 101: still one call for contact 1.
    db["activity_bindings"].insert_all(bind("b3", ("contact", 1), ("deal", 101)))
    db.execute("UPDATE calls SET activity_id = 'b3' WHERE id = 1")
    run(mirror)
    assert values(mirror, "contact", 2)["interactions_30d"] == 1
    assert values(mirror, "contact", 4)["interactions_30d"] == 2  # b1 through deal 102, b2 bound
    assert values(mirror, "contact", 4)["calls_90d"] == 1
    assert values(mirror, "company", 11)["interactions_30d"] == 2
    assert values(mirror, "company", 11)["calls_90d"] == 1
    assert values(mirror, "company", 10)["interactions_30d"] == 1  # b1 through deal 102
    assert values(mirror, "contact", 1)["calls_90d"] == 2  # calls 1 and 2, each once
    assert values(mirror, "contact", 1)["interactions_30d"] == 1  # b1 through deal 102


def test_an_automated_call_is_no_call_no_interaction_and_no_first_response(mirror):
    db = mirror.db
    # Contact 2: a manager's call and an informational one (a robot), each with its activity.
    db["activities"].insert_all(
        [
            activity("m1", "call", "out", "2026-11-10T10:00:00Z", "contact", 2),
            activity("r1", "call", "out", "2026-11-11T10:00:00Z", "contact", 2),
        ]
    )
    db["calls"].insert_all(
        [
            call(8, "contact", 2, "out", "2026-11-10T10:00:00Z", "m1"),
            call(9, "contact", 2, "out", "2026-11-11T10:00:00Z", "r1", is_automated=1),
            # a robot calling about contact 3's open deal an hour after it was created
            call(10, "deal", 106, "out", "2026-10-01T01:00:00Z", None, is_automated=1),
        ]
    )
    run(mirror)
    v = values(mirror, "contact", 2)
    assert (v["calls_90d"], v["call_minutes_90d"]) == (1, 1.0)
    assert (v["interactions_30d"], v["interactions_30d_call"]) == (1, 1)
    assert "first_response_minutes" not in values(mirror, "contact", 3)  # nobody answered yet


def test_a_planned_activity_is_no_interaction_until_its_time(mirror):
    db = mirror.db
    db["activities"].insert_all(
        [
            activity("p1", "meeting", None, "2026-11-30T10:00:00Z", "contact", 3, is_completed=0),
            activity("p2", "call", "out", "2026-11-22T10:00:00Z", "contact", 3, is_completed=0),  # due
            activity("d1", "email", "out", "2026-11-10T10:00:00Z", "contact", 3),
        ]
    )
    run(mirror)
    v = values(mirror, "contact", 3)
    assert v["interactions_30d"] == 2  # p2 (its time has come) and d1; not next week's meeting
    assert v["interactions_30d_meeting"] == 0
    assert v["days_since_last_interaction"] == 1  # p2, not a negative day count from p1


def test_neither_a_robot_call_nor_a_planned_activity_answers_a_client(mirror):
    db = mirror.db
    db["activities"].insert_all(
        [
            # contact 2 writes; a robot calls 5 minutes later; a manager answers after an hour
            activity("q1", "chat", "in", "2026-11-20T10:00:00Z", "contact", 2),
            activity("r2", "call", "out", "2026-11-20T10:05:00Z", "contact", 2),
            activity("e1", "email", "out", "2026-11-20T11:00:00Z", "contact", 2),
            # contact 3 writes; the only "answer" is a call planned for next week
            activity("q2", "email", "in", "2026-11-21T10:00:00Z", "contact", 3),
            activity("p3", "call", "out", "2026-11-30T10:00:00Z", "contact", 3, is_completed=0),
        ]
    )
    db["calls"].insert(call(11, "contact", 2, "out", "2026-11-20T10:05:00Z", "r2", is_automated=1))
    run(mirror)
    assert values(mirror, "contact", 2)["response_minutes"] == 60
    assert "response_minutes" not in values(mirror, "contact", 3)  # not answered yet


def test_days_to_next_contact_is_the_nearest_planned_activity_ahead(mirror):
    db = mirror.db
    db["activities"].insert_all(
        [
            activity("p1", "meeting", None, "2026-11-30T10:00:00Z", "contact", 3, is_completed=0),
            activity("p2", "call", "out", "2026-11-26T12:00:00Z", "deal", 106, is_completed=0),  # 3 days
            activity("p3", "call", "out", "2026-11-22T10:00:00Z", "contact", 3, is_completed=0),  # overdue
            activity("d1", "meeting", None, "2026-11-24T10:00:00Z", "contact", 3),  # done (early)
            activity("p4", "meeting", None, "2026-11-25T10:00:00Z", "contact", 2, is_completed=0),
        ]
    )
    db["activity_bindings"].insert_all(bind("p4", ("contact", 2), ("company", 11)))
    run(mirror)
    assert values(mirror, "contact", 3)["days_to_next_contact"] == 3  # p2 on its open deal
    assert values(mirror, "company", 11)["days_to_next_contact"] == 2  # p4 through its binding
    assert "days_to_next_contact" not in values(mirror, "contact", 1)  # nothing planned
