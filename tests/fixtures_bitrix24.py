"""Fixtures for the Bitrix24 sandbox (pulled in by tests/conftest.py).

- `b24_dataset`: a fresh small dataset (seed 1, 300 deals) per test, so mutations made by
  one test never leak into another. Mutate it through its methods (`ds.update`, `ds.delete`,
  `ds.set_custom`, ...) to change the "portal" between two syncs.
- `b24_sandbox`: a started `Bitrix24Sandbox` over `b24_dataset` on 127.0.0.1 (ephemeral
  port), limits OFF, cost model OFF, no latency or faults; stopped after the test.
  Use `b24_sandbox.webhook_url` (`.../rest/1/sandboxsecret123/`) for webhook calls, or
  `issue_code()` + `oauth_url` + `client_endpoint` for OAuth (client_id "sandbox.app",
  client_secret "sandbox-secret").

For limits or the cost model, build your own: `Bitrix24Sandbox(b24_dataset, limits=True,
drain_rate=0.001)` or `cost_model=True, page_cost_s=0.001, operating_budget_s=0.01`; for the
60-second cap on one request, server seconds that pass quickly: `cost_model=True,
page_cost_s=10.0, time_scale=0.001` (a list page: 10 s of server time, 10 ms of real time).
"""

from __future__ import annotations

import pytest

from sandbox.bitrix24 import Bitrix24Sandbox
from sandbox.data import generate


@pytest.fixture
def b24_dataset():
    """A fresh 300-deal sandbox dataset (seed 1)."""
    return generate(seed=1, size=300)


@pytest.fixture
def b24_sandbox(b24_dataset):
    """A running Bitrix24 sandbox over `b24_dataset`: limits and cost model off."""
    srv = Bitrix24Sandbox(b24_dataset, limits=False, cost_model=False).start()
    try:
        yield srv
    finally:
        srv.stop()
