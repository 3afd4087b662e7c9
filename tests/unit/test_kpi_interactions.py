"""Interaction and survey KPIs on a hand-built mirror with known answers."""

from __future__ import annotations

import pytest

from connector.config.kpi import KpiConfig
from connector.kpi import engine as kpi
from tests.unit.survey_fixtures import add_survey_answers
from tests.unit.test_kpi import NOW, S, build_mirror, values

ACTS = [
    # id, channel, direction, at, entity_type, entity_id, deleted
    ("a1", "chat", "in", "2026-11-20T10:00:00Z", "contact", 1, 0),
    ("a2", "chat", "in", "2026-11-20T10:05:00Z", "contact", 1, 0),  # same wait as a1
    ("a3", "chat", "out", "2026-11-20T10:30:00Z", "contact", 1, 0),  # answers after 30 min
    ("a4", "email", "in", "2026-11-21T09:00:00Z", "deal", 101, 0),  # deal of contact 1 and co 10
    ("a5", "email", "out", "2026-11-21T11:00:00Z", "deal", 101, 0),  # 120 min
    ("a6", "call", "in", "2026-11-22T08:00:00Z", "contact", 1, 0),
    ("a7", "call", "out", "2026-11-22T08:10:00Z", "contact", 1, 0),  # 10 min -> median 30
    ("a8", "meeting", "out", "2026-09-01T10:00:00Z", "contact", 1, 0),  # outside 30 days
    ("a9", "sms", "out", "2026-11-22T12:00:00Z", "contact", 1, 1),  # deleted
    ("a10", "sms", "in", "2026-11-23T09:00:00Z", "contact", 3, 0),  # never answered
    ("a11", "meeting", "out", "2026-11-01T00:00:00Z", "company", 11, 0),
]
# The calls behind a6 and a7 (a CRM's timeline shows each call as an activity too), and a call a
# manager took on contact 3's card half an hour after its SMS (beyond test_kpi's calls 1-6).
CALLS = [
    # id, direction, status, started_at, entity_type, entity_id
    (7, "in", "missed", "2026-11-22T08:00:00Z", "contact", 1),
    (8, "out", "answered", "2026-11-22T08:10:00Z", "contact", 1),
    (9, "in", "answered", "2026-11-23T09:30:00Z", "contact", 3),
]


@pytest.fixture
def mirror():
    m = build_mirror()
    m.db["activities"].insert_all(
        [
            dict(
                source=S,
                id=a[0],
                channel=a[1],
                direction=a[2],
                at=a[3],
                entity_type=a[4],
                entity_id=a[5],
                is_deleted=a[6],
            )
            for a in ACTS
        ]
    )
    m.db["calls"].insert_all(
        dict(
            source=S,
            id=c[0],
            direction=c[1],
            status=c[2],
            started_at=c[3],
            entity_type=c[4],
            entity_id=c[5],
            duration_s=0,
            is_deleted=0,
        )
        for c in CALLS
    )
    add_survey_answers(
        m,
        S,
        [
            ("n1", "nps", 6, "2026-05-01T00:00:00Z", "contact", 1),
            ("n2", "nps", 9, "2026-06-01T00:00:00Z", "deal", 101),  # newest for contact 1, company 10
            ("c1", "csat", 4, "2026-06-01T00:00:00Z", "contact", 3),
            ("x1", "nps", 2, "2026-07-01T00:00:00Z", "contact", 5),  # a deleted contact
        ],
    )
    yield m
    m.close()


def run(m, **kw):
    return kpi.compute(m, S, KpiConfig(currency_rates={"USD": 90.0}, **kw), now=NOW)


def test_interactions_per_channel_and_total(mirror):
    run(mirror)
    v = values(mirror, "contact", 1)
    assert v["interactions_30d"] == 5  # a1-a7, chats a1-a3 one conversation: a8 too old, a9 deleted
    assert (
        v["interactions_30d_chat"],
        v["interactions_30d_email"],
        v["interactions_30d_call"],
        v["interactions_30d_meeting"],
        v["interactions_30d_sms"],
    ) == (1, 2, 2, 0, 0)
    assert values(mirror, "company", 10)["interactions_30d"] == 2  # a4, a5 on deal 101
    assert values(mirror, "contact", 2)["interactions_30d"] == 0  # none at all: zero, not empty


def test_chats_count_once_per_conversation(mirror):
    """Chat rows with no pause over 24 hours are one conversation, whether a CRM lists each message
    (amoCRM) or each session (Bitrix24); a pause of a day and a minute starts another."""
    mirror.db["activities"].insert_all(
        dict(source=S, id=i, channel="chat", direction=d, at=at, entity_type=et, entity_id=e, is_deleted=0)
        for i, d, at, et, e in (
            ("m1", "in", "2026-11-21T10:30:00Z", "deal", 101),  # 24 h after a3: the same one
            ("m2", "in", "2026-11-22T10:31:00Z", "contact", 1),  # 24 h 1 min after m1: a new one
            ("m3", "out", "2026-11-22T10:40:00Z", "contact", 1),
        )
    )
    run(mirror)
    v = values(mirror, "contact", 1)
    assert v["interactions_30d_chat"] == 2 and v["interactions_30d"] == 6
    assert values(mirror, "company", 10)["interactions_30d_chat"] == 1  # m1 alone on deal 101


def test_window_comes_from_config(mirror):
    run(mirror, interactions_days=90)
    assert values(mirror, "contact", 1)["interactions_30d_meeting"] == 1


def test_days_since_last_interaction(mirror):
    run(mirror)
    assert values(mirror, "contact", 1)["days_since_last_interaction"] == 1  # a7 on Nov 22 08:10
    assert values(mirror, "company", 11)["days_since_last_interaction"] == 22
    assert "days_since_last_interaction" not in values(mirror, "contact", 2)  # never: empty


def test_response_minutes_is_the_median_wait(mirror):
    run(mirror)
    # Contact 1 waits: from the missed call of Nov 2 (test_kpi's call 2) through the chats a1, a2
    # to a3 (26,550 min: one run of questions waits once), a4 -> a5 (120), call 7 -> call 8 (10).
    assert values(mirror, "contact", 1)["response_minutes"] == 120
    # Company 10: test_kpi's missed call 6 of Nov 10 waits until a5 on its deal (a4 joins the run).
    assert values(mirror, "company", 10)["response_minutes"] == 16500


def test_a_call_a_manager_took_answers_the_question_before_it(mirror):
    run(mirror)
    assert values(mirror, "contact", 3)["response_minutes"] == 30  # a10's SMS, then call 9
    mirror.conn.execute("DELETE FROM calls WHERE id = 9")
    run(mirror)
    assert "response_minutes" not in values(mirror, "contact", 3)  # asked, never answered


def test_an_answered_incoming_call_starts_no_wait(mirror):
    """Calls 5 (on deal 106) and 9 were conversations a manager took: with a10 gone, contact 3 has
    no question and no response time, however late its next outgoing interaction."""
    mirror.conn.execute("DELETE FROM activities WHERE id = 'a10'")
    mirror.db["activities"].insert_all(
        dict(source=S, id=i, channel=ch, direction=d, at=at, entity_type=et, entity_id=e, is_deleted=0)
        for i, ch, d, at, et, e in (
            ("c5", "call", "in", "2026-11-20T00:00:00Z", "deal", 106),  # the calls' timeline rows
            ("c9", "call", "in", "2026-11-23T09:30:00Z", "contact", 3),
            ("e1", "email", "out", "2026-11-23T09:50:00Z", "contact", 3),
        )
    )
    run(mirror)
    assert "response_minutes" not in values(mirror, "contact", 3)


def test_latest_survey_scores(mirror):
    run(mirror)
    assert values(mirror, "contact", 1)["nps_latest"] == 9
    assert values(mirror, "company", 10)["nps_latest"] == 9
    assert values(mirror, "contact", 3)["csat_latest"] == 4
    assert "nps_latest" not in values(mirror, "contact", 2)  # no survey answer: empty
    assert "nps_latest" not in values(mirror, "contact", 3)


def test_card_field_scores_count_as_answers_at_the_cards_change(mirror):
    cards = [
        ("contact", 2, "nps", 10.0, "2026-11-01T00:00:00Z"),
        ("contact", 1, "nps", 3.0, "2026-01-01T00:00:00Z"),
    ]  # older than the 9 from June
    kpi.compute(mirror, S, KpiConfig(), now=NOW, card_survey=cards)
    assert values(mirror, "contact", 2)["nps_latest"] == 10
    assert values(mirror, "contact", 1)["nps_latest"] == 9


def test_without_a_survey_table_card_fields_still_count():
    m = build_mirror()
    kpi.compute(
        m, S, KpiConfig(), now=NOW, card_survey=[("company", 11, "csat", 5.0, "2026-11-01T00:00:00Z")]
    )
    assert values(m, "company", 11)["csat_latest"] == 5
    assert "csat_latest" not in values(m, "company", 10)
