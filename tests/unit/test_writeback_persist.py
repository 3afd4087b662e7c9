"""What write-back records survives closing the mirror (a run is a separate process)."""

from connector.config.kpi import KpiConfig
from connector.kpi import engine as kpi
from connector.kpi import writeback
from connector.mirror.store import Mirror
from tests.fakes import FakeAdapter
from tests.unit.test_kpi import NOW, S, build_mirror
from tests.unit.test_writeback import FIELDS


def test_write_state_survives_reopen_so_the_next_run_sends_nothing(tmp_path):
    path = str(tmp_path / "m.db")
    cfg = KpiConfig(fields=FIELDS)
    build_mirror(path).close()
    adapter = FakeAdapter()
    with Mirror(path) as m:
        kpi.compute(m, S, cfg, now=NOW)
        first = writeback.write_back(m, adapter, S, cfg)
    assert first.values > 0
    with Mirror(path) as m:  # a new process: only what was committed is there
        logged = m.conn.execute("SELECT count(*) FROM writeback_log WHERE status = 'ok'").fetchone()[0]
        assert logged == first.values
        kpi.compute(m, S, cfg, now=NOW)
        sent_before = len(adapter.batches)
        second = writeback.write_back(m, adapter, S, cfg)
    assert second.values == 0
    assert len(adapter.batches) == sent_before
