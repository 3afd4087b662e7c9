"""The sandbox dataset generator: determinism, proportions, internal consistency, mutations."""

import collections

import pytest

from sandbox.data import generate
from sandbox.data_store import ENTITIES

NOW = 1_795_000_000  # a fixed hour boundary, so generation does not depend on the clock


@pytest.fixture(scope="module")
def ds():
    return generate(seed=7, size=2000, now=NOW)


def test_same_seed_same_data_other_seed_differs():
    a, b = generate(3, 400, NOW), generate(3, 400, NOW)
    c = generate(4, 400, NOW)
    for name in ENTITIES:
        assert getattr(a, name) == getattr(b, name), name
    assert a.fields == b.fields
    assert a.deals != c.deals


def test_interactions_leave_the_builders_rows_as_they_were(monkeypatch):
    """Channels, activities, callbacks, conversions and surveys draw from a stream of their own:
    every other row of a seed is what it was before they existed (tests pin ids and counts of
    those). Callbacks are calls: the generated calls keep their order and fields, and their ids
    make room for the callbacks, as a CRM numbers calls in time order."""
    from sandbox.data_interactions import Interactions

    with_them = generate(3, 400, NOW)
    monkeypatch.setattr(Interactions, "build", lambda self: None)
    without = generate(3, 400, NOW)
    new_keys = {"source", "utm_source", "vote", "activity_id", "lead_id", "caller", "informational"}
    for name in (n for n in ENTITIES if n not in ("activities", "surveys")):  # theirs
        strip = [
            {k: v for k, v in r.items() if k not in new_keys and (name, k) != ("calls", "id")}
            for r in getattr(with_them, name)
            if "callback_of" not in r
        ]
        if name == "calls":
            without.calls = [{k: v for k, v in r.items() if k != "id"} for r in without.calls]
        assert strip == getattr(without, name), name


def test_interactions_channels_and_surveys(ds):
    acts = [a for a in ds.activities if not a.get("planned")]
    assert len([a for a in acts if not a.get("reply")]) == round(0.6 * 2000)  # + replies to them
    channels = collections.Counter(a["channel"] for a in acts)
    assert set(channels) == {"email", "chat", "sms", "meeting"} and min(channels.values()) > 50
    assert all(a["direction"] is None for a in acts if a["channel"] == "meeting")
    assert all(a["direction"] in ("in", "out") for a in acts if a["channel"] != "meeting")
    assert 0 < sum(a["is_deleted"] for a in acts) < 0.05 * len(acts)
    assert {a["entity_type"] for a in acts} == {"deal", "contact", "company", "lead"}
    owners = {et: ds.by_id(et) for et in ("deal", "contact", "company", "lead")}
    assert all(
        owners[a["entity_type"]][a["entity_id"]]["created_at"] <= a["at"] <= a["updated_at"] <= NOW
        for a in acts
    )
    ids = [a["id"] for a in acts]
    assert ids == sorted(ids) and ids[0] > max(c["id"] for c in ds.calls)
    # one activity id sequence for calls and the rest, in time order
    timeline = sorted(
        [(c["started_at"], c["activity_id"]) for c in ds.calls] + [(a["at"], a["id"]) for a in acts]
    )
    assert [i for _, i in timeline] == list(range(30_000_001, 30_000_001 + len(timeline)))
    fresh = generate(2, 100, NOW)  # the module's dataset stays unchanged
    last = max(fresh.activities[-1]["id"], fresh.calls[-1]["activity_id"])
    call = fresh.add("calls", direction="in")
    chat = fresh.add("activities", channel="chat")
    assert chat["id"] == call["activity_id"] + 1 == last + 2
    votes = [c["vote"] for c in ds.calls if c["vote"] is not None]
    assert votes and set(votes) <= {1, 2, 3, 4, 5}
    assert all(c["status"] == "answered" for c in ds.calls if c["vote"] is not None)
    assert ds.surveys and all(0 <= n["score"] <= 10 and n["kind"] == "nps" for n in ds.surveys)
    kinds = collections.Counter(
        (d["source"] is not None, d["utm_source"] is not None) for d in ds.deals + ds.leads
    )
    assert all(kinds[k] > 20 for k in ((True, True), (True, False), (False, True), (False, False)))
    assert any(d["utm_source"] != d["utm_source"].strip() for d in ds.deals if d["utm_source"])


def test_a_team_answers_most_questions_within_minutes_to_hours(ds):
    """Most incoming messages get a reply on their card and channel, and most missed incoming
    calls a callback, after a median of about half an hour."""
    asked = [a for a in ds.activities if a["direction"] == "in"]
    replies = [a for a in ds.activities if a.get("reply")]
    assert 0.75 < len(replies) / len(asked) < 0.95
    missed = {c["id"]: c for c in ds.calls if c["direction"] == "in" and c["status"] != "answered"}
    backs = [c for c in ds.calls if "callback_of" in c]
    assert 0.7 < len(backs) / len(missed) < 0.9
    assert all(
        c["direction"] == "out" and c["entity_id"] == missed[c["callback_of"]]["entity_id"] for c in backs
    )
    delays = sorted(c["started_at"] - missed[c["callback_of"]]["started_at"] for c in backs)
    assert 10 * 60 < delays[len(delays) // 2] < 60 * 60 and delays[int(0.9 * len(delays))] < 6 * 3600


def test_default_now_is_the_current_hour():
    ds = generate(1, 50)
    assert ds.now % 3600 == 0
    assert all(d["created_at"] < ds.now for d in ds.deals)


def test_proportions(ds):
    assert len(ds.deals) == 2000
    assert len(ds.contacts) == 600 and len(ds.companies) == 160
    assert len(ds.users) == 5 and 2 <= len(ds.pipelines) <= 4
    generated = [c for c in ds.calls if "callback_of" not in c]
    assert len(ds.tasks) == 1000 and len(generated) == 4000 and len(ds.leads) == 200
    small = generate(1, 10, NOW)
    assert len(small.contacts) >= 20 and len(small.companies) >= 5
    status = collections.Counter(d["status"] for d in ds.deals)
    assert 0.30 < status["won"] / 2000 < 0.40
    assert 0.25 < status["lost"] / 2000 < 0.35
    currencies = collections.Counter(d["currency"] for d in ds.deals)
    assert currencies["RUB"] > 1800 and currencies["USD"] > 0
    assert any(d["amount"] == 0 for d in ds.deals)


def test_lists_sorted_by_id_and_ids_unique(ds):
    for name in (
        "users",
        "companies",
        "contacts",
        "deals",
        "leads",
        "tasks",
        "calls",
        "stage_changes",
        "events",
    ):
        ids = [r["id"] for r in getattr(ds, name)]
        assert ids == sorted(ids) and len(set(ids)) == len(ids), name
    stage_ids = [s["id"] for p in ds.pipelines for s in p["stages"]]
    assert len(set(stage_ids)) == len(stage_ids)


def test_timestamps_within_three_years_before_now(ds):
    lo = NOW - 3 * 366 * 86400
    for name in ("companies", "contacts", "deals", "leads", "tasks"):
        for r in getattr(ds, name):
            assert lo <= r["created_at"] <= r["updated_at"] < NOW, (name, r)
    assert all(lo <= c["started_at"] < NOW for c in ds.calls)


def test_pipelines_have_one_won_one_lost_and_open_stages(ds):
    assert ds.pipelines[0]["is_default"] and not any(p["is_default"] for p in ds.pipelines[1:])
    for p in ds.pipelines:
        sem = collections.Counter(s["semantics"] for s in p["stages"])
        assert sem["won"] == 1 and sem["lost"] == 1 and 3 <= sem["open"] <= 5


def test_stage_history_matches_final_stage(ds):
    history = collections.defaultdict(list)
    for sc in ds.stage_changes:
        history[sc["deal_id"]].append(sc)
    for d in ds.deals:
        path = history[d["id"]]
        assert path, d
        assert path[0]["previous_stage_id"] is None
        assert path[-1]["stage_id"] == d["stage_id"]
        for prev, cur in zip(path, path[1:]):
            assert cur["previous_stage_id"] == prev["stage_id"]
            assert cur["changed_at"] >= prev["changed_at"]
        pipeline, stage = ds.stage(d["stage_id"])
        assert pipeline["id"] == d["pipeline_id"] and stage["semantics"] == d["status"]
        if d["status"] == "open":
            assert d["closed_at"] is None
        else:
            assert d["closed_at"] == path[-1]["changed_at"] >= d["created_at"]


def test_repeat_customers_and_shared_deals(ds):
    won = collections.Counter(
        d["contact_ids"][0] for d in ds.deals if d["status"] == "won" and d["contact_ids"]
    )
    assert won.most_common(1)[0][1] >= 3
    assert any(len(d["contact_ids"]) >= 2 for d in ds.deals)
    assert any(not d["contact_ids"] for d in ds.deals)
    contacts = ds.by_id("contacts")
    assert all(c in contacts for d in ds.deals for c in d["contact_ids"])


def test_tasks_calls_events_are_consistent(ds):
    overdue = [t for t in ds.tasks if not t["is_completed"] and t["due_at"] < NOW]
    assert overdue
    for t in ds.tasks:
        assert (t["completed_at"] is not None) == bool(t["is_completed"])
    for c in ds.calls:
        assert (c["duration_s"] > 0) == (c["status"] == "answered")
        assert c["entity_id"] in ds.by_id(c["entity_type"])
    for e in ds.events:
        row = ds.by_id(e["entity"])[e["entity_id"]]
        assert row["updated_at"] >= e["at"]
    deleted = [e for e in ds.events if e["type"] == "deleted"]
    assert deleted and all(ds.by_id(e["entity"])[e["entity_id"]] for e in deleted)


def test_fields_defined(ds):
    names = {f["name"]: f for f in ds.fields["contact"]}
    assert names["Source"]["type"] == "text" and names["Discount, %"]["type"] == "numeric"
    assert any(c["custom"] for c in ds.contacts)


def test_update_deal_stage_records_history_and_closes():
    ds = generate(1, 100, NOW)
    deal = next(d for d in ds.deals if d["status"] == "open")
    before, old_stage = len(ds.stage_changes), deal["stage_id"]
    won = next(s for s in ds.pipelines[-1]["stages"] if s["semantics"] == "won")
    row = ds.update("deals", deal["id"], stage_id=won["id"], amount=5.0)
    assert row["status"] == "won" and row["pipeline_id"] == ds.pipelines[-1]["id"]
    assert row["closed_at"] == row["updated_at"] >= NOW and row["amount"] == 5.0
    sc = ds.stage_changes[-1]
    assert len(ds.stage_changes) == before + 1
    assert sc["previous_stage_id"] == old_stage and sc["deal_id"] == deal["id"]
    assert sc["stage_id"] == won["id"] and sc["changed_at"] == row["updated_at"]


def test_ticks_are_strictly_increasing():
    ds = generate(1, 50, NOW)
    a = ds.update("contacts", ds.contacts[0]["id"], name="A")["updated_at"]
    b = ds.update("contacts", ds.contacts[0]["id"], name="B")["updated_at"]
    assert b > a >= NOW
    assert ds.tick() > b


def test_add_delete_restore_and_custom_fields():
    ds = generate(1, 50, NOW)
    v0 = ds.versions["deals"]
    deal = ds.add("deals", name="New one", amount=10.0)
    assert deal["id"] == ds.deals[-2]["id"] + 1 and ds.by_id("deals")[deal["id"]] is deal
    assert deal["status"] == "open" and ds.stage_changes[-1]["deal_id"] == deal["id"]
    assert ds.versions["deals"] > v0
    ds.delete("deal", deal["id"])
    assert deal["is_deleted"] == 1 and ds.events[-1]["type"] == "deleted"
    ds.restore("deal", deal["id"])
    assert deal["is_deleted"] == 0 and ds.events[-1]["type"] == "restored"
    f = ds.add_field("contact", "KPI: Win rate, %", "numeric", code="KPI_WIN_RATE")
    assert f["id"] > max(x["id"] for x in ds.fields["company"])
    c = ds.contacts[3]
    old = c["updated_at"]
    ds.set_custom("contact", c["id"], f["id"], 42.5)
    assert c["custom"][f["id"]] == 42.5 and c["updated_at"] > old
    t = ds.write_customs("contact", {c["id"]: {f["id"]: None}, ds.contacts[4]["id"]: {f["id"]: 1}})
    assert f["id"] not in c["custom"] and c["updated_at"] == ds.contacts[4]["updated_at"] == t


def test_planned_interactions_bindings_and_informational_calls(ds):
    """Drawn after everything else: planned meetings and calls ahead of `now` (created before
    it, ids after every other activity), further records some interactions concern, a few
    automated informational outgoing calls, and every call's caller record."""
    planned = [a for a in ds.activities if a.get("planned")]
    assert len(planned) == round(0.02 * 2000)
    assert {a["channel"] for a in planned} == {"meeting", "call"}
    assert all(a["created_at"] == a["updated_at"] <= NOW < a["at"] <= NOW + 14 * 86400 for a in planned)
    assert min(a["id"] for a in planned) > max(a["id"] for a in ds.activities if not a.get("planned"))
    also = [a for a in ds.activities if a.get("also")]
    assert len(also) > 50
    deals = ds.by_id("deals")
    for a in also:
        for et, eid in a["also"]:
            assert et in ("deal", "contact") and eid
            if et == "deal" and a["entity_type"] == "contact":
                assert a["entity_id"] in deals[eid]["contact_ids"]
    info = [c for c in ds.calls if c.get("informational")]
    assert info and all(c["direction"] == "out" and not c["vote"] for c in info)
    assert len(info) < 0.1 * len(ds.calls)
    for c in ds.calls:
        if c["entity_type"] in ("contact", "company", "lead"):
            assert c["caller"] == (c["entity_type"], c["entity_id"])
        elif c["entity_type"] == "deal" and deals[c["entity_id"]]["contact_ids"]:
            assert c["caller"] == ("contact", deals[c["entity_id"]]["contact_ids"][0])
