"""The store's entry-stage fill: a stage change that came without its stage (an
amoCRM `lead_added`) gets the stage before the entity's next change, else its current one."""

import itertools

import pytest

from adapters.base import Page
from connector.mirror.store import Mirror

ENTRY = {
    "id": "e-added",
    "entity": "deal",
    "entity_id": 7,
    "pipeline_id": None,
    "stage_id": None,
    "previous_stage_id": None,
    "changed_at": "2024-01-01T00:00:00Z",
}
MOVE = {
    "id": "e-moved",
    "entity": "deal",
    "entity_id": 7,
    "pipeline_id": 20,
    "stage_id": 142,
    "previous_stage_id": 11,
    "changed_at": "2024-01-05T00:00:00Z",
}
DEAL = {"id": 7, "name": "d", "pipeline_id": 20, "stage_id": 142, "status": "won"}
# Stage 11 lives in pipeline 10; 142 (won) repeats in every pipeline.
STAGES = [
    {"pipeline_id": 10, "id": 11, "entity": "deal"},
    {"pipeline_id": 10, "id": 142, "entity": "deal"},
    {"pipeline_id": 20, "id": 21, "entity": "deal"},
    {"pipeline_id": 20, "id": 142, "entity": "deal"},
]


def changes(m):
    return m.conn.execute(
        "SELECT id, pipeline_id, stage_id, previous_stage_id FROM stage_changes ORDER BY changed_at"
    ).fetchall()


PAGES = {
    "entry": Page(rows={"stage_changes": [ENTRY]}),
    "move": Page(rows={"stage_changes": [MOVE]}),
    "deal": Page(rows={"deals": [DEAL]}),
}


@pytest.mark.parametrize("order", list(itertools.permutations(PAGES)), ids="-".join)
def test_entry_stage_is_the_one_before_the_first_move_whichever_page_comes_first(tmp_path, order):
    with Mirror(str(tmp_path / "m.db")) as m:
        m.save_page("s", "pipelines", Page(rows={"stages": STAGES}))
        for name in order:
            m.save_page("s", name, PAGES[name])
        # the entry row: stage 11 in its own pipeline; the move keeps the API's previous stage
        assert changes(m) == [("e-added", 10, 11, None), ("e-moved", 20, 142, 11)]


def test_a_deal_that_never_moved_entered_its_current_stage_until_it_moves(tmp_path):
    with Mirror(str(tmp_path / "m.db")) as m:
        m.save_page("s", "pipelines", Page(rows={"stages": STAGES}))
        m.save_page("s", "deals", Page(rows={"deals": [dict(DEAL, pipeline_id=10, stage_id=11)]}))
        m.save_page("s", "events", Page(rows={"stage_changes": [ENTRY]}))
        assert changes(m) == [("e-added", 10, 11, None)]
        # a later run: the deal moved on; the entry row stays at the stage it entered
        m.save_page("s", "deals", Page(rows={"deals": [DEAL]}))
        m.save_page("s", "events", Page(rows={"stage_changes": [MOVE]}))
        assert changes(m) == [("e-added", 10, 11, None), ("e-moved", 20, 142, 11)]


def test_an_entry_filled_from_the_current_stage_is_corrected_by_a_later_page(tmp_path):
    """The deals stream ran after the move; the entry page came before the move's page."""
    with Mirror(str(tmp_path / "m.db")) as m:
        m.save_page("s", "deals", Page(rows={"deals": [DEAL]}))
        m.save_page("s", "events", Page(rows={"stage_changes": [ENTRY]}))
        assert changes(m) == [("e-added", 20, 142, None)]
        m.save_page("s", "events", Page(rows={"stage_changes": [MOVE]}))
        # no stages known yet: the pipeline is the next change's
        assert changes(m) == [("e-added", 20, 11, None), ("e-moved", 20, 142, 11)]


def test_rows_that_came_with_their_stage_are_left_alone(tmp_path):
    first = dict(ENTRY, id="h1", pipeline_id=0, stage_id="NEW")
    later = dict(MOVE, id="h2", pipeline_id=0, stage_id="WON", previous_stage_id=None)
    with Mirror(str(tmp_path / "m.db")) as m:
        m.save_page("s", "deals", Page(rows={"deals": [dict(DEAL, pipeline_id=0, stage_id="WON")]}))
        m.save_page("s", "history", Page(rows={"stage_changes": [first, later]}))
        assert changes(m) == [("h1", 0, "NEW", None), ("h2", 0, "WON", "NEW")]
