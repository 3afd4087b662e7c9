"""The overlapping offset reader (`adapters.amocrm.overlap`) over an in-memory offset list
that changes while it is read: no row that stays in the list is ever skipped."""

import threading

import pytest

from adapters.amocrm.overlap import MAX_BACKOFFS, overlap_pages
from adapters.errors import StreamError


class OffsetList:
    """An amoCRM-like list: rows in a fixed order, `page=N&limit=L` from row (N-1)*L, a next
    link while rows remain, None (204) past the end. `after(n, rows)` runs once the n-th
    answer was built (the change lands between answers)."""

    def __init__(self, n: int, size: int = 250):
        self.rows = [{"id": i, "updated_at": 1000 + i} for i in range(1, n + 1)]
        self.size, self.asked, self.hooks = size, [], {}
        self.lock = threading.Lock()

    def fetch(self, page: int, limit: int):
        with self.lock:
            self.asked.append((page, limit))
            start = (page - 1) * min(limit, self.size)
            chunk = [
                dict(r) if isinstance(r, dict) else r
                for r in self.rows[start : start + min(limit, self.size)]
            ]
            more = len(self.rows) > start + len(chunk)
            hook = self.hooks.pop(len(self.asked), None)
            if hook:
                hook(self)
        if not chunk:
            return None
        links = {"self": {"href": "x"}, **({"next": {"href": "y"}} if more else {})}
        return {"_links": links, "_embedded": {"tasks": chunk}}

    def drop(self, *ids):
        self.rows = [r for r in self.rows if r["id"] not in ids]


def read(lst: OffsetList, workers: int = 1, size: int = 250) -> list[dict]:
    return [
        i
        for page in overlap_pages(lst.fetch, "updated_at", "tasks", size=size, workers=workers)
        for i in page
    ]


@pytest.mark.parametrize("workers", [1, 4])
def test_unchanged_list_read_once_each(workers):
    lst = OffsetList(2000)
    got = read(lst, workers)
    assert [i["id"] for i in got] == list(range(1, 2001))
    # each page repeats 1..8 rows of the one before: a few more requests than 8 pages
    assert 9 <= len(lst.asked) <= 10 + workers


@pytest.mark.parametrize("workers", [1, 4])
@pytest.mark.parametrize("gone", [(1,), (5, 6, 7), tuple(range(1, 40)), (249, 250, 251)])
def test_rows_deleted_after_page_two_skip_nothing(workers, gone):
    lst = OffsetList(2000)
    lst.hooks[2] = lambda ls: ls.drop(*gone)
    ids = [i["id"] for i in read(lst, workers)]
    assert len(ids) == len(set(ids))
    assert set(ids) >= {r["id"] for r in lst.rows}


def test_deletions_at_every_page_and_rows_entering_skip_nothing():
    lst = OffsetList(3000)
    for n in range(2, 30, 2):
        lst.hooks[n] = lambda ls, n=n: ls.drop(ls.rows[n * 50]["id"], ls.rows[n * 50 + 1]["id"])
    lst.hooks[5] = lambda ls: ls.rows.insert(10, {"id": 99_999, "updated_at": 5})
    ids = [i["id"] for i in read(lst, 3)]
    assert set(ids) >= {r["id"] for r in lst.rows} - {99_999}
    assert len(ids) == len(set(ids))


def test_edited_row_coming_back_is_yielded_again():
    lst = OffsetList(600)

    def edit(ls):
        ls.rows[249]["updated_at"] = 9999  # the last row of page 1, repeated by page 2

    lst.hooks[1] = edit
    got = read(lst)
    assert [i["updated_at"] for i in got if i["id"] == 250] == [1250, 9999]


def test_small_pages_served_and_one_request_when_the_caller_stops():
    lst = OffsetList(40, size=10)  # the list serves 10 rows whatever is asked
    pages = overlap_pages(lst.fetch, "updated_at", "tasks", size=250, workers=4)
    assert [i["id"] for i in next(pages)] == list(range(1, 11))
    pages.close()
    assert lst.asked == [(1, 250)]
    assert [i["id"] for i in read(lst, 4)] == list(range(1, 41))
    assert all(limit <= 10 for _, limit in lst.asked[2:])


def test_a_list_that_never_settles_fails_naming_it():
    lst = OffsetList(5000)

    def churn(ls):  # 10 rows leave the front, 10 new ones arrive
        top = ls.rows[-1]["id"]
        ls.drop(*[r["id"] for r in ls.rows[:10]])
        ls.rows += [{"id": top + i, "updated_at": 1} for i in range(1, 11)]

    class Always(dict):  # after every answer
        def pop(self, n, default=None):
            return churn

    lst.hooks = Always()
    with pytest.raises(StreamError, match=f"tasks: the list kept changing.*{MAX_BACKOFFS}"):
        list(overlap_pages(lst.fetch, "updated_at", "tasks", label="tasks"))


def test_items_that_are_no_objects_are_yielded_once_and_paging_goes_on():
    lst = OffsetList(600)
    lst.rows[249] = "not an object"  # the last row of page 1, repeated by page 2
    lst.rows[300]["id"] = {"junk": 1}
    got = read(lst, 3)
    assert got.count("not an object") == 1 and len(got) == 600
