"""Measures and report benchmark: `metrics.compute` and the HTML report on the 1M-deal mirror.

    python -m benchmarks.bench_report [--scale 1.0] [--dir /tmp]

The mirror is benchmarks.bench_kpi's (1M deals, 300k contacts, 2M calls at scale 1) plus what
the measures read: 60 managers, 3 pipelines of 4 open stages and won / lost, a stage history
of about 3.3M rows (entry, some moves, some skips, the close), acquisition channels, 300k
leads, 1M interactions, 50k survey answers and a spend file of 36 months x 8 channels.
Prints the time of the measures, of the report and the report's size (targets: together
<= 30 s on the 2-core development machine, the file <= 5 MB).

Measured on the 2-core development machine (2026-11-26), scale 1, machine shared with other work:
  load average 2.6-2.7: measures 19.7-20.0 s (CPU 21.9-22.8 s), report 1.5-1.9 s; total 21.2-21.9 s
  load average 4.6:     total 35.0 s (CPU 23.4 s)
  report file 0.22 MB; 2,879 metrics rows
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from datetime import timedelta
from types import SimpleNamespace

from benchmarks.bench_kpi import NOW, SOURCE, generate
from connector.config.kpi import KpiConfig, Spend, SpendConfig
from connector.measures import engine as metrics
from connector.mirror.store import Mirror
from connector.report import page as report

CHANNELS = ["google", "yandex", "facebook", "vk", "website", "referral", "exhibition", "advert"]
TZ = "Europe/Moscow"


def augment(path: str, scale: float, seed: int = 2) -> None:
    """Add the tables and columns the measures read to a bench_kpi mirror."""
    rng = random.Random(seed)
    m = Mirror(path)
    c = m.conn
    n_deals = int(1e6 * scale)
    with m.db.atomic():
        c.executemany(
            "INSERT INTO users (source, id, name) VALUES (?, ?, ?)",
            [(SOURCE, i, f"Manager {i}") for i in range(1, 61)],
        )
        for p in (1, 2, 3):
            c.execute(
                "INSERT INTO pipelines (source, id, entity, name) VALUES (?, ?, 'deal', ?)",
                (SOURCE, p, f"Pipeline {p}"),
            )
            c.executemany(
                "INSERT INTO stages (source, pipeline_id, id, entity, name, sort, semantics) "
                "VALUES (?, ?, ?, 'deal', ?, ?, ?)",
                [(SOURCE, p, p * 10 + k, f"Stage {k}", k * 10, "open") for k in (1, 2, 3, 4)]
                + [(SOURCE, p, 142, "Won", 100, "won"), (SOURCE, p, 143, "Lost", 110, "lost")],
            )
        c.execute(
            "UPDATE deals SET responsible_user_id = id % 60 + 1, pipeline_id = id % 3 + 1, "
            "channel = CASE WHEN id % 9 = 8 THEN NULL ELSE "
            + "CASE id % 9 "
            + " ".join(f"WHEN {i} THEN '{ch}'" for i, ch in enumerate(CHANNELS))
            + " END END, stage_id = CASE status WHEN 'won' THEN 142 WHEN 'lost' THEN 143 "
            "ELSE (id % 3 + 1) * 10 + id % 4 + 1 END WHERE source = ?",
            (SOURCE,),
        )
        # the stage history: entry, a move to stage 2 (most), to 3 (some: a few skip 2), the close
        moves = [
            ("1", "1", "created_at", "1"),
            ("2", "2", "strftime('%Y-%m-%dT%H:%M:%SZ', created_at, '+2 days')", "id % 10 < 7"),
            ("3", "3", "strftime('%Y-%m-%dT%H:%M:%SZ', created_at, '+5 days')", "id % 10 < 5"),
        ]
        for tag, k, at, cond in moves:
            c.execute(
                f"INSERT INTO stage_changes (source, id, entity, entity_id, pipeline_id, stage_id, changed_at) "
                f"SELECT source, id || ':{tag}', 'deal', id, pipeline_id, pipeline_id * 10 + {k}, {at} "
                f"FROM deals WHERE source = ? AND {cond}",
                (SOURCE,),
            )
        c.execute(
            "INSERT INTO stage_changes (source, id, entity, entity_id, pipeline_id, stage_id, changed_at) "
            "SELECT source, id || ':c', 'deal', id, pipeline_id, stage_id, closed_at FROM deals "
            "WHERE source = ? AND status IN ('won', 'lost') AND closed_at IS NOT NULL",
            (SOURCE,),
        )
        start = NOW - timedelta(days=3 * 365)
        stamp = lambda: (start + timedelta(seconds=rng.randrange(3 * 365 * 86400))).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        stamps = [stamp() for _ in range(50_000)]
        c.executemany(
            "INSERT INTO leads (source, id, created_at, is_deleted) VALUES (?, ?, ?, 0)",
            ((SOURCE, i, rng.choice(stamps)) for i in range(1, int(3e5 * scale) + 1)),
        )

        def acts():
            for i in range(1, int(1e6 * scale) + 1):
                at = rng.choice(stamps)
                yield (
                    SOURCE,
                    f"a{i}",
                    rng.choice(("email", "chat", "call", "meeting", "sms")),
                    "in" if i % 2 else "out",
                    at,
                    i % 60 + 1,
                    "deal",
                    rng.randint(1, n_deals),
                )

        c.executemany(
            "INSERT INTO activities (source, id, channel, direction, at, responsible_user_id, "
            "entity_type, entity_id, is_deleted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
            acts(),
        )
        c.execute(
            "CREATE TABLE IF NOT EXISTS survey_answers (source TEXT NOT NULL, id TEXT NOT NULL, kind TEXT, "
            "score REAL, at TEXT, entity_type TEXT, entity_id INTEGER, origin TEXT, raw TEXT, "
            "PRIMARY KEY (source, id))"
        )
        c.executemany(
            "INSERT INTO survey_answers (source, id, kind, score, at, entity_type, entity_id) "
            "VALUES (?, ?, ?, ?, ?, 'contact', ?)",
            (
                (
                    SOURCE,
                    f"s{i}",
                    "nps" if i % 2 else "csat",
                    rng.randint(0, 10) if i % 2 else rng.randint(1, 5),
                    rng.choice(stamps),
                    i,
                )
                for i in range(1, int(5e4 * scale) + 1)
            ),
        )
    c.execute("ANALYZE")
    m.close()


def spend() -> list[Spend]:
    out = []
    for back in range(36):
        y, mo = divmod(NOW.year * 12 + NOW.month - 1 - back, 12)
        out += [
            Spend(f"{y:04d}-{mo + 1:02d}-01", ch, 50_000.0 + 1000 * i, "") for i, ch in enumerate(CHANNELS)
        ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--reuse", action="store_true", help="Use the mirror a previous run left in --dir.")
    args = ap.parse_args()
    workdir = args.dir or tempfile.mkdtemp(prefix="bench-report-")
    path = os.path.join(workdir, f"bench-report-{args.scale}.db")
    if not (args.reuse and os.path.exists(path)):
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        t0 = time.monotonic()
        generate(path, args.scale)
        augment(path, args.scale)
        print(f"mirror built in {time.monotonic() - t0:.0f} s: {path}")
    cfg = KpiConfig(currency_rates={"USD": 90.0}, spend=SpendConfig("spend.csv", spend()))
    load = os.getloadavg()[0]
    m = Mirror(path)
    t1, c1 = time.monotonic(), time.process_time()
    res = metrics.compute(m, SOURCE, cfg, "RUB", TZ, now=NOW)
    t2, c2 = time.monotonic(), time.process_time()
    out = os.path.join(workdir, "bench-report.html")
    text = report.build(
        m.conn,
        [SimpleNamespace(name=SOURCE, currency="RUB")],
        language="en",
        months=12,
        churn_days=cfg.churn_days,
        tz=TZ,
    )
    size = report.write(out, text)
    t3, c3 = time.monotonic(), time.process_time()
    m.close()
    # CPU time (all threads of this process) beside the wall clock: on a shared machine the
    # wall clock also counts the time other processes held the cores.
    print(f"measures: {res.rows:,} rows in {t2 - t1:.1f} s (CPU {c2 - c1:.1f} s)")
    print(f"report:   {size / 1e6:.2f} MB in {t3 - t2:.1f} s (CPU {c3 - c2:.1f} s): {out}")
    print(
        f"total:    {t3 - t1:.1f} s (CPU {c3 - c1:.1f} s; target <= 30 s), report {size / 1e6:.2f} MB "
        f"(target <= 5 MB); load average before: {load:.1f}"
    )


if __name__ == "__main__":
    main()
