"""KPI benchmark: full and incremental passes on a generated mirror, their scaling, write-back.

    python -m benchmarks.bench_kpi [--scale 1.0] [--dir /tmp] [--before CHECKOUT ...] [--no-scaling]

Scale 1 is 1M deals, 300k contacts, 2M calls (plus 60k companies, 500k tasks). The mirror is
written straight into SQLite with executemany, not through a sandbox. Printed, at scale 1:

- the full pass: the first (every value new) and two more (nothing changed); with
  `--before CHECKOUT` (a checkout of an earlier version, e.g. the main branch; repeat it for
  several) the same passes of that version first, on a copy of the same mirror, in a
  subprocess: the before and after figures side by side, from one run on one machine;
- incremental passes after 1% of deals changed, at the same clock and a day later, each
  timed against a full pass over a copy of the same mirror (whose kpi_values must be equal:
  the bench stops if not), with the ratio (target <= 1/5) and the clients recomputed;
- peak RSS of each pass;
- write-back: the first run writes every mapped value, the second after changing 1% of deals;
  requests per changed card should be ceil(cards / 50), at most ceil(changed values / 50);
- the full pass again on twice the data, to check the time scales linearly (target <= 2.2x;
  `--no-scaling` skips it).

Measured on the 2-core development machine (2026-11-23), scale 1, four runs:
  first run (all 5.8M values new) 19.3-21.9 s, twice the data 40.1-44.1 s: ratio 1.90-2.10
  second run (nothing changed)    19.7-20.8 s, twice the data 39.5-42.1 s: ratio 1.90-2.13
  peak RSS of a first run 960 MB (1.9 GB at twice the data; it counts the memory-mapped mirror)
  write-back: 7,140 requests for 356,981 cards; 109 after 1% of deals changed; 0 on a re-run

Incremental passes (2026-12-06, same machine shared by ~8 busy processes, load 8-10: every
figure some 1.5-2x the quiet machine's), scale 1, full passes in fresh processes by turns:
  before incremental passes (engine at 090c5dc), 3 full passes: 46.4 / 33.6 / 36.2 s
  with them (no other change to what is computed):            54.9 / 29.6 / 29.7 s
  (the first pass also stores kpi_anchors; the full pass itself is no faster, see below)
  1% of deals changed, same clock: incremental 6.0 s vs full 35.2 s: 0.171, kpi_values equal
  1% of deals changed, a day later: incremental 9.1 s vs full 32.6 s: 0.278 (every client's
  day counts change: 400k of the 408k values written are theirs, as in the full pass)
After main's activity bindings, turns and date KPIs (main at ca6bf52 vs this, same run):
  full passes 50.0 / 52.9 / 59.0 s before, 55.5 / 58.5 / 53.6 s with incremental passes
  1% changed, same clock 12.5 s vs 54.1 s: 0.231; a day later 15.0 s vs 54.5 s: 0.276 (before
  the calls and interactions of some clients were picked before the scratch table was made);
  after that: same clock 9.9 s vs 53.9 s: 0.184; a day later 14.4 s vs 52.9 s: 0.272
  (kpi_values equal to the full pass's in every case)
Where a full pass spends its time (statement timings, scale 1): one diff per KPI and target
against kpi_values (a key seek per client, ~1.2 us, 0.4-0.5 s per KPI for 300k contacts;
~60% of the pass), first_response_minutes (~15%: its median's window sort), building
kpi_deals for contacts (~10%). Tried without gain: diffing by a sequential pass over the
stored range joined to a temp table of new values; temp_store = MEMORY.

Full passes of three versions by turns in fresh processes (2026-12-06, scale 1, same mirror,
first pass then two with nothing changed; load 1-6): engine at 090c5dc 26.7 / 25.0 / 24.9 s,
main at ba47b6b 54.2 / 52.0 / 50.4 s, with the scratch-table changes below 55.6 / 61.2 / 48.1 s
(kpi_values identical to main's, 8,469,323 rows). Since 090c5dc a pass also builds kpi_turns
(every call and interaction of all time) and computes the date and turn KPIs, so where it
spends its time moved: at scale 0.2, steady pass, per-target scratch tables (`prep.build`)
~50% (kpi_turns alone ~35%: picking 1.8M turns, matching them to clients and deals, sorting
them), response_minutes and first_response_minutes ~10% each, the other 28 KPIs' query and
diff ~25% together (0.1-0.2 s each). Matching picked rows by one sequential pass instead of an
index on them, and keying kpi_turns (client, at, turn) so response_minutes needs no sort: at
scale 0.2 build() 4.08 s vs 4.33 s (min of six by turns), response_minutes 0.51 s vs 0.62 s;
at scale 1 build() 25.7 s vs 25.7 s: within the noise of this machine.

Faster full pass (2026-12-06, 2-core machine shared with another busy process, load 1.1-1.4;
`--before` both versions, scale 1, same mirror, fresh processes by turns; first pass, then two
with nothing changed):
  engine at 090c5dc  24.5 / 24.5 / 24.4 s
  main at a376b65    48.2 / 47.0 / 46.2 s
  this version       35.1 / 31.6 / 31.7 s  (0.67-0.73 of main; 1.29-1.44x the 090c5dc engine)
  (an earlier run of the same three, three changes short: 27.2 / 24.7 / 25.4, 51.4 / 46.8 / 51.7,
  37.8 / 34.4 / 33.2 s). 1% of deals changed, same clock: incremental 6.2 s vs full 33.4 s:
  0.184; a day later 9.0 s vs 34.3 s: 0.263 (kpi_values equal to the full pass's in both).
  kpi_values of a first pass and of a second one a day later, after changes, are identical to
  main's row for row (EXCEPT both ways: 0 of 1,793,582 rows at scale 0.2; 0 of 1,984,111 on the
  same mirror given 100k activities, 30k bindings and calls bound to activities).
What it took, at scale 0.2 (statement timings, one steady pass 8.4 s -> 6.2 s): a row on a deal
finds the deal's clients by an index of kpi_deals on deal_id instead of seeks into kpi_d and
deal_contacts (kpi_turns 1.50 -> 0.70 s); the answers, turns, recent calls and open tasks are
read from the mirror once for both targets (turn picks 0.60 -> 0.33 s), bound turns from the
bindings (0.33 -> 0.21 s); response_minutes finds the previous turn and the next answer by key
seeks instead of a lag() window and a second index (0.76 + 0.22 -> 0.34 s); both medians by a
`median()` aggregate instead of row_number()/count() windows (response and first response
1.21 -> 0.87 s); the answers on deals in their own small index (0.21 s). Now: the KPI queries
and their diffs ~40% (the response times 0.86 s, the 28 others 1.66 s), kpi_turns ~15%, the
other scratch tables ~27%. Tried without gain: a diff by an EXCEPT merge or by a scan of the
stored range with rowid look-ups of the new values (finding each client's newest stored row
takes a GROUP BY that costs about what the key seeks do: ~1 us per client and KPI either way);
the same windows materialized; an anti-join instead of NOT EXISTS for a deal's main contact;
call and task totals tables like kpi_deal_totals (the five KPIs' queries 0.49 -> 0.31 s, but
the tables cost about that again: within the noise).

Redesign check (2026-11-26, same machine, back to back, KPI engine unchanged but for imports;
this machine ran about 1.5-2x slower than on 2026-11-23 and varied run to run):
  before: first 41.5 s, steady 43.1 s; twice the data 90.4 s / 75.9 s
  after:  first 29.1 s, steady 38.4 s; twice the data 73.2 s / 90.0 s
  (sum of the four: 250.9 s before, 230.7 s after); write-back requests identical (7,140; 109; 0)
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

from connector.config.kpi import KpiConfig
from connector.kpi import engine as kpi
from connector.kpi import writeback
from connector.mirror.store import Mirror
from tests.fakes import FakeAdapter

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
SOURCE = "bench"


def _timestamps(rng: random.Random, n: int = 50_000) -> list[str]:
    """A pool of ISO timestamps over the last three years (formatting 4M datetimes is slow)."""
    start = NOW - timedelta(days=3 * 365)
    return sorted(
        (start + timedelta(seconds=rng.randrange(3 * 365 * 86400))).strftime("%Y-%m-%dT%H:%M:%SZ")
        for _ in range(n)
    )


def generate(path: str, scale: float, seed: int = 1) -> dict[str, int]:
    """Write a mirror of `scale` x (1M deals, 300k contacts, 2M calls) to `path`."""
    rng = random.Random(seed)
    n_deals, n_contacts, n_calls = int(1e6 * scale), int(3e5 * scale), int(2e6 * scale)
    n_companies, n_tasks = int(6e4 * scale), int(5e5 * scale)
    ts = _timestamps(rng)
    m = Mirror(path)
    c = m.conn
    with m.db.atomic():
        c.executemany(
            "INSERT INTO companies (source, id, name, is_deleted) VALUES (?, ?, ?, 0)",
            ((SOURCE, i, f"co{i}") for i in range(1, n_companies + 1)),
        )
        c.executemany(
            "INSERT INTO contacts (source, id, name, company_id, is_deleted) VALUES (?, ?, ?, ?, ?)",
            (
                (SOURCE, i, f"ct{i}", rng.randint(1, n_companies), int(rng.random() < 0.01))
                for i in range(1, n_contacts + 1)
            ),
        )

        def deals():
            for i in range(1, n_deals + 1):
                k = rng.randrange(len(ts))
                r = rng.random()
                status = "won" if r < 0.4 else "lost" if r < 0.7 else "open"
                closed = ts[min(k + rng.randrange(1, 2000), len(ts) - 1)] if status != "open" else None
                cur = "USD" if rng.random() < 0.03 else "RUB"
                yield (
                    SOURCE,
                    i,
                    status,
                    round(rng.random() * 100_000, 2),
                    cur,
                    rng.randint(1, n_contacts),
                    rng.randint(1, n_companies) if rng.random() < 0.7 else None,
                    ts[k],
                    closed or ts[k],
                    closed,
                    int(rng.random() < 0.02),
                )

        c.executemany(
            "INSERT INTO deals (source, id, status, amount, currency, contact_id, company_id, "
            "created_at, updated_at, closed_at, is_deleted) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            deals(),
        )
        # every deal's main contact, plus a second contact on a fifth of them
        c.execute(
            "INSERT INTO deal_contacts (source, deal_id, contact_id, is_main) "
            "SELECT source, id, contact_id, 1 FROM deals"
        )
        c.executemany(
            "INSERT OR IGNORE INTO deal_contacts (source, deal_id, contact_id, is_main) VALUES (?,?,?,0)",
            ((SOURCE, rng.randint(1, n_deals), rng.randint(1, n_contacts)) for _ in range(n_deals // 5)),
        )

        def owner():
            r = rng.random()
            if r < 0.5:
                return "deal", rng.randint(1, n_deals)
            if r < 0.9:
                return "contact", rng.randint(1, n_contacts)
            return "company", rng.randint(1, n_companies)

        def calls():
            for i in range(1, n_calls + 1):
                et, eid = owner()
                r = rng.random()
                yield (
                    SOURCE,
                    i,
                    "out" if r < 0.5 else "in",
                    "missed" if r > 0.85 else "answered",
                    rng.randrange(600),
                    ts[rng.randrange(len(ts))],
                    et,
                    eid,
                )

        c.executemany(
            "INSERT INTO calls (source, id, direction, status, duration_s, started_at, entity_type, "
            "entity_id) VALUES (?,?,?,?,?,?,?,?)",
            calls(),
        )

        def tasks():
            for i in range(1, n_tasks + 1):
                et, eid = owner()
                done = int(rng.random() < 0.7)
                due = ts[rng.randrange(len(ts))]
                yield (SOURCE, i, et, eid, done, due, due if done else None, 0)

        c.executemany(
            "INSERT INTO tasks (source, id, entity_type, entity_id, is_completed, due_at, "
            "completed_at, is_deleted) VALUES (?,?,?,?,?,?,?,?)",
            tasks(),
        )
    c.execute("ANALYZE")
    m.close()
    return {
        "deals": n_deals,
        "contacts": n_contacts,
        "calls": n_calls,
        "companies": n_companies,
        "tasks": n_tasks,
    }


def _reset_peak_rss() -> None:
    """Start a new peak-RSS measurement (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss_mb() -> str:
    try:
        with open("/proc/self/status") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        return f"{kib / 1024:.0f} MB"
    except (OSError, StopIteration):
        return "n/a"


_BEFORE = """
import sys, time
from datetime import datetime, timezone
from connector.config.kpi import KpiConfig
from connector.kpi import engine as kpi
from connector.mirror.store import Mirror
now = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
cfg = KpiConfig(currency_rates={"USD": 90.0})
with Mirror(sys.argv[1]) as m:
    t0 = time.monotonic()
    kpi.compute(m, "bench", cfg, "RUB", now=now)
    print(time.monotonic() - t0, flush=True)
"""


def _fresh(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)


def _copy(src: Mirror, dst: str) -> None:
    """A consistent copy of the mirror (SQLite's backup, WAL included)."""
    _fresh(dst)
    out = sqlite3.connect(dst)
    src.conn.commit()
    src.conn.backup(out)
    out.close()


_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pass(copy: str, checkout: str) -> float:
    """One full pass of the engine in `checkout` over the mirror file `copy`, in seconds, in a
    fresh process (both versions alike: no page cache of an earlier pass in the connection)."""
    env = dict(os.environ, PYTHONPATH=checkout)
    out = subprocess.run(
        [sys.executable, "-c", _BEFORE, copy],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=checkout,
    )
    return float(out.stdout.split()[-1])


def _same_history(m: Mirror, other: str) -> bool:
    """Whether the source's kpi_values equal those of the mirror file `other`, row for row."""
    m.conn.execute("ATTACH DATABASE ? AS other", (other,))
    try:
        cols = "entity_type, entity_id, kpi, value, computed_at"
        for a, b in (("main", "other"), ("other", "main")):
            q = (
                f"SELECT count(*) FROM (SELECT {cols} FROM {a}.kpi_values WHERE source = :s "
                f"EXCEPT SELECT {cols} FROM {b}.kpi_values WHERE source = :s)"
            )
            if m.conn.execute(q, {"s": SOURCE}).fetchone()[0]:
                return False
        return True
    finally:
        m.conn.execute("DETACH DATABASE other")


def _incremental(m: Mirror, path: str, kpi_cfg: KpiConfig, now: datetime, what: str, mod: int) -> float:
    """Change 1% of deals, then an incremental pass against a full one on a copy; the ratio."""
    m.conn.execute(
        "UPDATE deals SET status = CASE status WHEN 'open' THEN 'won' ELSE 'open' END, "
        "closed_at = '2026-11-22T00:00:00Z', amount = amount + 1 WHERE id % 100 = ?",
        (mod,),
    )
    m.conn.commit()
    copy = path + ".full"
    _copy(m, copy)
    f = Mirror(copy)
    _reset_peak_rss()
    t0 = time.monotonic()
    kpi.compute(f, SOURCE, kpi_cfg, "RUB", now=now)
    full = time.monotonic() - t0
    full_rss = _peak_rss_mb()
    f.close()  # its mapped pages would count in the incremental pass's peak RSS
    _reset_peak_rss()
    t0 = time.monotonic()
    res = kpi.compute(m, SOURCE, kpi_cfg, "RUB", now=now, incremental=True)
    inc = time.monotonic() - t0
    inc_rss = _peak_rss_mb()
    if res.mode != "incremental" or not _same_history(m, copy):
        raise SystemExit(f"incremental pass ({res.mode}) differs from the full one: {what}")
    _fresh(copy)
    print(
        f"[1x] 1% of deals changed, {what}: incremental {inc:.1f} s ({res.clients} clients, "
        f"{res.changed} values changed, peak RSS {inc_rss}) vs full {full:.1f} s "
        f"(peak RSS {full_rss}): ratio {inc / full:.3f} (target <= 0.2); kpi_values equal",
        flush=True,
    )
    return inc / full


def bench(
    scale: float, workdir: str, kpi_cfg: KpiConfig, label: str, before: list[str]
) -> tuple[float, float]:
    path = os.path.join(workdir, f"bench-kpi-{scale}.db")
    _fresh(path)
    t0 = time.monotonic()
    sizes = generate(path, scale)
    print(f"[{label}] generated {sizes} in {time.monotonic() - t0:.1f} s", flush=True)
    copies = [f"{path}.before{i}" for i in range(len(before))]
    for copy in copies:
        shutil.copy(path, copy)
    # the passes of every version by turns, so a machine busy for a while slows them alike
    runs = []
    for what in ("first, all values new", "second, nothing changed", "third, nothing changed"):
        then = [_pass(copy, checkout) for copy, checkout in zip(copies, before)]
        runs.append(_pass(path, _HERE))
        vs = "".join(
            f"; BEFORE ({checkout}) {t:.1f} s: ratio {runs[-1] / t:.2f}" for checkout, t in zip(before, then)
        )
        print(f"[{label}] full pass ({what}): {runs[-1]:.1f} s{vs}", flush=True)
    first, steady = runs[0], min(runs[1:])
    for copy in copies:
        _fresh(copy)
    with Mirror(path) as m:
        _reset_peak_rss()
        t0 = time.monotonic()
        res = kpi.compute(m, SOURCE, kpi_cfg, "RUB", now=NOW)
        print(
            f"[{label}] full pass in this process: {time.monotonic() - t0:.1f} s, "
            f"clients {res.clients}, peak RSS {_peak_rss_mb()} (counts the memory-mapped mirror)",
            flush=True,
        )
        if label == "1x":
            _incremental(m, path, kpi_cfg, NOW, "same clock", 0)
            _incremental(m, path, kpi_cfg, NOW + timedelta(days=1), "a day later", 1)
            _bench_writeback(m, kpi_cfg)
    _fresh(path)
    return first, steady


def _bench_writeback(m: Mirror, kpi_cfg: KpiConfig) -> None:
    adapter = FakeAdapter(SOURCE, keep_cards=False)
    for run in ("first write-back", "after 1% of deals changed"):
        if run.startswith("after"):
            m.conn.execute(
                "UPDATE deals SET status = 'won', closed_at = '2026-11-22T00:00:00Z' "
                "WHERE id % 100 = 0 AND status = 'open'"
            )
            m.conn.commit()
            kpi.compute(m, SOURCE, kpi_cfg, "RUB", now=NOW)
        before = adapter.requests
        t0 = time.monotonic()
        rep = writeback.write_back(m, adapter, SOURCE, kpi_cfg)
        spent = time.monotonic() - t0
        reqs = adapter.requests - before - rep.field_requests
        print(
            f"[1x] {run}: {rep.clients} cards, {rep.values} values changed, {reqs} write requests "
            f"(target ceil(cards/50) = {math.ceil(rep.clients / 50)} <= ceil(values/50) = "
            f"{math.ceil(rep.values / 50)}; {reqs / max(rep.values, 1):.4f} requests per value), "
            f"{spent:.1f} s",
            flush=True,
        )
    rep = writeback.write_back(m, adapter, SOURCE, kpi_cfg)
    print(f"[1x] unchanged re-run: {rep.values} values, {rep.requests} requests", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument(
        "--before",
        metavar="CHECKOUT",
        action="append",
        default=[],
        help="also time the full pass of this checkout (repeatable: each by turns with this one)",
    )
    ap.add_argument("--no-scaling", action="store_true", help="skip the run on twice the data")
    args = ap.parse_args()
    cfg = KpiConfig(
        currency_rates={"USD": 90.0},
        fields={
            "win_rate": {"contact": "KPI: Win rate, %", "company": "KPI: Win rate, %"},
            "revenue_won": {"contact": "KPI: Lifetime revenue", "company": "KPI: Lifetime revenue"},
            "deals_open": {"contact": "KPI: Open deals", "company": "KPI: Open deals"},
        },
    )
    a = bench(args.scale, args.dir, cfg, "1x", args.before)
    if args.no_scaling:
        return
    b = bench(args.scale * 2, args.dir, cfg, "2x", args.before)
    for name, t1, t2 in (("first run", a[0], b[0]), ("steady run", a[1], b[1])):
        print(
            f"KPI compute, {name}: {t1:.1f} s at scale {args.scale} (target <= 30 s at scale 1), "
            f"{t2:.1f} s at twice that: ratio {t2 / t1:.2f} (target <= 2.2)"
        )


if __name__ == "__main__":
    main()
