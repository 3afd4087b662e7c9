"""Bitrix24 bookmarks (shapes of adapters.bookmarks), resumed passes, reconciliation and empty
lists, through `responses` mocks."""

from __future__ import annotations

import json

import responses

from tests.unit.test_bitrix24_unit import DEAL, HOOK, NOW, adapter, batch_body


@responses.activate
def test_bookmarks_give_the_list_filters():
    a = adapter()
    responses.post(HOOK + "voximplant.statistic.get", json={"result": [], "total": 0})
    list(a.fetch("calls", json.dumps({"last_id": {"calls": 7002000}}), NOW))
    assert json.loads(responses.calls[0].request.body)["FILTER"] == {">ID": 7002000}
    responses.post(HOOK + "crm.company.list", json={"result": [], "total": 0})
    pages = list(a.fetch("companies", json.dumps({"since": "2026-11-23T00:00:00Z"}), NOW))
    body = json.loads(responses.calls[-1].request.body)
    assert body["filter"] == {">=DATE_MODIFY": "2026-11-22T23:55:00+00:00", ">ID": 0}
    assert json.loads(pages[-1].bookmark) == {"since": "2026-11-23T12:00:00Z"}
    assert len(responses.calls) == 2


@responses.activate
def test_mid_pass_pages_bookmark_the_unfinished_windows():
    a = adapter()
    bookmark = json.dumps(
        {"since": None, "pass": "2026-11-22T02:00:00Z", "windows": [[120, 200], [200, 300]]}
    )

    def one_row_above(request):  # honours `>ID`, as a real portal does: one row per window
        above = int(json.loads(request.body)["filter"][">ID"])
        return 200, {}, json.dumps({"result": [{"ID": str(above + 30), "TITLE": "X"}], "total": 0})

    responses.add_callback(responses.POST, HOOK + "crm.company.list", callback=one_row_above)
    pages = list(a.fetch("companies", bookmark, NOW))
    assert json.loads(pages[0].bookmark) == {
        "since": None,
        "pass": "2026-11-22T02:00:00Z",
        "windows": [[200, 300]],
    }
    assert pages[1].bookmark is None and pages[-1].present == {}  # a resumed pass lists no table whole


@responses.activate
def test_a_resumed_pass_then_reads_what_changed_since_it_began():
    """Rows of the windows read before the stop may have changed since: after the unfinished
    windows, one read from the pass's start (minus the overlap); then this run's start is the
    bookmark."""
    a = adapter()
    bookmark = json.dumps({"since": None, "pass": "2026-11-22T02:00:00Z", "windows": [[200, 300]]})
    asked = []

    def answer(request):
        body = json.loads(request.body)
        asked.append(body["filter"])
        edited = ">=DATE_MODIFY" in body["filter"] and int(body["filter"][">ID"]) < 150
        row = {"ID": "150" if edited else "230", "TITLE": "edited" if edited else "X"}
        return 200, {}, json.dumps({"result": [row], "total": 0})

    responses.add_callback(responses.POST, HOOK + "crm.company.list", callback=answer)
    pages = list(a.fetch("companies", bookmark, NOW))
    assert asked == [{">ID": 200, "<=ID": 300}, {">=DATE_MODIFY": "2026-11-22T01:55:00+00:00", ">ID": 0}]
    assert [r["id"] for p in pages for r in p.rows.get("companies", [])] == [230, 150]
    assert json.loads(pages[-1].bookmark) == {"since": "2026-11-23T12:00:00Z"}


@responses.activate
def test_a_fresh_full_pass_doubles_as_reconciliation_and_reconcile_waits_its_hours():
    a = adapter(streams=["deals", "reconcile"])
    responses.post(HOOK + "batch", json=batch_body({"lo": [{"ID": "37"}], "hi": [{"ID": "37"}]}))
    responses.post(
        HOOK + "batch", json=batch_body({"p0": [DEAL], "q0": {"items": [{"id": 37, "contactIds": [12]}]}})
    )
    deals = list(a.fetch("deals", None, NOW))
    assert deals[-1].present == {"deals": [37]} and len(responses.calls) == 2
    done = list(a.fetch("reconcile", json.dumps({"at": "2026-11-20T00:00:00Z"}), NOW))
    assert len(responses.calls) == 2  # deals were listed whole a moment ago; nothing else wanted
    assert [x.present for x in done] == [{}] and json.loads(done[-1].bookmark) == {
        "at": "2026-11-23T12:00:00Z"
    }
    recent = list(a.fetch("reconcile", json.dumps({"at": "2026-11-23T06:00:00Z"}), NOW))  # 6 h old
    assert len(responses.calls) == 2 and json.loads(recent[-1].bookmark) == {"at": "2026-11-23T06:00:00Z"}


@responses.activate
def test_reconcile_lists_every_id_of_its_streams():
    a = adapter(streams=["contacts", "reconcile"])
    responses.post(HOOK + "batch", json=batch_body({"lo": [{"ID": "4"}, {"ID": "9"}], "hi": [{"ID": "9"}]}))
    responses.post(HOOK + "crm.contact.list", json={"result": [{"ID": "4"}, {"ID": "9"}], "total": 0})
    pages = list(a.fetch("reconcile", None, NOW))
    assert pages[0].present == {"contacts": [4, 9]} and len(responses.calls) == 2
    assert json.loads(responses.calls[1].request.body)["select"] == ["ID"]


def test_no_windows_reads_nothing_even_with_parallel_workers():
    from adapters.bitrix24.paging import ListSpec, Pager

    assert list(Pager(None, workers=4).run(ListSpec("crm.company.list"), [])) == []


@responses.activate
def test_first_load_of_an_empty_list_with_parallel_workers_is_an_empty_success():
    a = adapter()
    a.pager.workers = 4
    responses.post(HOOK + "batch", json=batch_body({"lo": [], "hi": []}))
    pages = list(a.fetch("calls", None, NOW))
    assert len(responses.calls) == 1 and sum(x.count() for x in pages) == 0
    assert json.loads(pages[-1].bookmark) == {"last_id": {"calls": 0}}
