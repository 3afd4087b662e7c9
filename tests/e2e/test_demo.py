"""`crm-connector demo`: the whole job on both sandboxes, in a child process that leaves nothing behind."""

import os
import re
import sqlite3
import subprocess
import sys

from adapters import registry


def test_demo_runs_end_to_end_and_exits_cleanly(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "connector", "demo", "--size", "200", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert re.search(r"(both|all \d+) sandboxes stopped", out)
    mirror = re.search(r"Mirror: (\S+)", out).group(1)
    assert os.path.exists(mirror)
    # the cards as the sandbox CRMs now show them carry KPI values, for every CRM (the demo's
    # sources are named after their kinds)
    for kind in registry.kinds():
        assert re.search(kind + r": contact cards in the CRM now show:\n  #\d+ .*Win rate, % = ", out)
    with sqlite3.connect(mirror) as conn:
        per_source = dict(conn.execute("SELECT source, count(*) FROM deals GROUP BY source").fetchall())
        written = conn.execute("SELECT count(*) FROM writeback_log WHERE status = 'ok'").fetchone()[0]
    assert set(per_source) == set(registry.kinds())
    assert all(n > 150 for n in per_source.values())
    assert written > 0
    # the report is written beside the mirror, with a section per source
    report = re.search(r"Report: (\S+)", out).group(1)
    assert report == os.path.join(str(tmp_path), "crm-report.html")
    page = open(report, encoding="utf-8").read()
    assert all(f"Source: {kind}</h2>" in page for kind in registry.kinds())
    assert page.count('<figure class="chart"><svg') >= 2 * 5
