"""Bitrix24 end to end: after each scenario (see portal_scenarios) every mirror table equals
the sandbox's own state (portal_check). One test per (scenario, table), so a known defect
marks exactly the table it breaks."""

import pytest

from adapters.bitrix24.adapter import Bitrix24Adapter
from connector.config.loader import SourceConfig
from sandbox.bitrix24 import Bitrix24Sandbox
from sandbox.data import generate
from tests.e2e.portal_check import TABLES, assert_mirror_equals_portal
from tests.e2e.portal_scenarios import Crm, Played, cases

SIZE = 300  # six pages of deals at Bitrix24's 50 a page


def _deal_listing(req) -> bool:
    return "crm.deal.list" in req.path or b"crm.deal.list" in (req.body or b"")


CRM = Crm(source="b24", is_deal_listing=_deal_listing)

# (scenario or "*", table) -> why the check fails today. strict: once fixed, it fails as XPASS
# and the marker must go.
KNOWN: dict = {}


def start(tmp):
    server = Bitrix24Sandbox(generate(seed=1, size=SIZE), limits=False, cost_model=False).start()
    # reconcile_hours=0: every run reconciles, so deletions made between runs show at once.
    cfg = SourceConfig(
        name=CRM.source,
        kind="bitrix24",
        webhook_url=server.webhook_url,
        requests_per_second=500.0,
        reconcile_hours=0.0,
    )
    return server, Bitrix24Adapter(cfg, None)


@pytest.fixture(scope="module")
def played(tmp_path_factory):
    p = Played(CRM, start, tmp_path_factory)
    yield p
    p.close()


@pytest.mark.parametrize("scenario,table", cases(KNOWN, TABLES))
def test_mirror_equals_bitrix24(played, scenario, table):
    server, mirror = played.get(scenario)
    assert_mirror_equals_portal(mirror, server, CRM.source, tables=(table,))


def test_a_difference_names_table_id_and_field(played):
    """The check itself: a corrupted copy of a good mirror fails, naming what differs."""
    import sqlite3

    from tests.e2e.portal_check import mirror_differences

    server, mirror = played.get("first_sync")
    copy = sqlite3.connect(":memory:")
    mirror.conn.backup(copy)
    deal = next(d for d in server.dataset.deals if not d["is_deleted"])
    copy.execute("UPDATE deals SET amount = 1.5, is_deleted = 1 WHERE id = ?", (deal["id"],))
    copy.execute("DELETE FROM contacts WHERE id = ?", (server.dataset.contacts[0]["id"],))
    diffs = mirror_differences(copy, server, CRM.source, tables=("deals", "contacts"))
    assert diffs == [
        f"deals id={deal['id']}: is_deleted: mirror 1 != portal 0 (alive in the CRM)",
        f"deals id={deal['id']}: amount: mirror 1.5 != portal {float(deal['amount'])!r}",
        f"contacts id={server.dataset.contacts[0]['id']}: missing from the mirror",
    ]
