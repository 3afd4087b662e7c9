"""`crm-connector demo`: the whole job on both sandboxes, in a child process that leaves nothing behind."""

import os
import re
import sqlite3
import subprocess
import sys


def test_demo_runs_end_to_end_and_exits_cleanly(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "connector", "demo", "--size", "200", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "both sandboxes stopped" in out
    mirror = re.search(r"Mirror: (\S+)", out).group(1)
    assert os.path.exists(mirror)
    # the cards as the sandbox CRMs now show them carry KPI values, for both CRMs
    assert re.search(r"amo: contact cards in the CRM now show:\n  #\d+ .*Win rate, % = ", out)
    assert re.search(r"b24: contact cards in the CRM now show:\n  #\d+ .*Win rate, % = ", out)
    with sqlite3.connect(mirror) as conn:
        per_source = dict(conn.execute("SELECT source, count(*) FROM deals GROUP BY source").fetchall())
        written = conn.execute("SELECT count(*) FROM writeback_log WHERE status = 'ok'").fetchone()[0]
    assert per_source["amo"] > 150 and per_source["b24"] > 150
    assert written > 0
