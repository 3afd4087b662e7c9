"""Fixtures for the amoCRM sandbox.

- `amo_dataset`: a fresh small sandbox `Dataset` (seed 1, 300 deals, ~90 contacts, ~24
  companies, 150 tasks, 600 calls); function-scoped, so tests may mutate it.
- `amo_sandbox`: an `AmoSandbox` on 127.0.0.1, port 0, serving `amo_dataset`, started and
  stopped around the test. Rate limits are OFF so tests run fast (turn them on with
  `amo_sandbox.set_limits(True)`). Use `amo_sandbox.url` as the account base_url and
  `amo_sandbox.access_token` as the long-lived Bearer token; `amo_headers` is that header.
"""

import pytest

from sandbox.amocrm import AmoSandbox
from sandbox.data import generate

AMO_SIZE = 300


@pytest.fixture
def amo_dataset():
    return generate(seed=1, size=AMO_SIZE)


@pytest.fixture
def amo_sandbox(amo_dataset):
    with AmoSandbox(amo_dataset, limits=False) as server:
        yield server


@pytest.fixture
def amo_headers(amo_sandbox):
    return {"Authorization": f"Bearer {amo_sandbox.access_token}"}
