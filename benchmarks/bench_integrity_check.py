"""Cost of the integrity check a writing run makes before it writes.

Builds a mirror of `--rows` deals (default 1,000,000; raw JSON of ~400 bytes each, like a
real amoCRM deal) plus their stage changes, then times each candidate check on a warm and a
cold page cache (cold: the file's pages dropped with posix_fadvise, as after a reboot).

Run: python -m benchmarks.bench_integrity_check [--rows 1000000] [--path /tmp/bench-mirror.db]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import time

from connector.mirror import store


def build(path: str, rows: int) -> None:
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    m = store.Mirror(path)
    raw = json.dumps(
        {"custom_fields_values": [{"field_id": i, "values": [{"value": "x" * 20}]} for i in range(8)]}
    )
    with m.db.atomic():
        m.conn.executemany(
            "INSERT INTO deals (source, id, name, pipeline_id, stage_id, status, amount, currency, "
            "created_at, updated_at, raw) VALUES ('amo', ?, ?, 1, 142, 'won', ?, 'RUB', "
            "'2026-01-01T00:00:00Z', '2026-01-02T00:00:00Z', ?)",
            ((i, f"Deal {i}", i * 1.5, raw) for i in range(rows)),
        )
        m.conn.executemany(
            "INSERT INTO stage_changes (source, id, entity, entity_id, stage_id, changed_at) "
            "VALUES ('amo', ?, 'deal', ?, 142, '2026-01-02T00:00:00Z')",
            ((f"sc{i}", i) for i in range(rows)),
        )
    m.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    m.close()


def drop_cache(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def timed(path: str, sql: str, cold: bool) -> tuple[float, object]:
    if cold:
        drop_cache(path)
    conn = sqlite3.connect(path)
    t0 = time.perf_counter()
    out = conn.execute(sql).fetchall()
    seconds = time.perf_counter() - t0
    conn.close()
    return seconds, out[:1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--path", default="/tmp/bench-mirror.db")
    args = ap.parse_args()
    t0 = time.perf_counter()
    build(args.path, args.rows)
    size = os.path.getsize(args.path) / 2**20
    print(
        f"built {args.rows:,} deals + {args.rows:,} stage changes: {size:,.0f} MB in "
        f"{time.perf_counter() - t0:.1f}s"
    )
    for sql in ("PRAGMA quick_check", "PRAGMA quick_check(1)", "PRAGMA integrity_check(1)"):
        for cold in (True, False):
            seconds, out = timed(args.path, sql, cold)
            print(f"{sql:<28} {'cold' if cold else 'warm'}: {seconds:6.2f}s  -> {out}")
    seconds = min(timed(args.path, "SELECT 1", False)[0] for _ in range(3))
    print(f"{'open + SELECT 1':<28} warm: {seconds * 1000:6.2f} ms")


if __name__ == "__main__":
    main()
