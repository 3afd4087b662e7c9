"""Fixtures for the amoCRM sandbox.

- `amo_dataset`: a fresh small sandbox `Dataset` (seed 1, 300 deals, ~90 contacts, ~24
  companies, 150 tasks, 600 calls); function-scoped, so tests may mutate it.
- `amo_sandbox`: an `AmoSandbox` on 127.0.0.1, port 0, serving `amo_dataset`, started and
  stopped around the test. Rate limits are OFF so tests run fast (turn them on with
  `amo_sandbox.set_limits(True)`). Use `amo_sandbox.url` as the account base_url and
  `amo_sandbox.access_token` as the long-lived Bearer token; `amo_headers` is that header.

Plain helpers for tests that talk to the server directly: `get(server, path, headers,
**params)` (one GET) and `all_pages(...)` (follows `_links.next`).
"""

import pytest
import requests

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


def get(server, path, headers, **params):
    """One GET against the sandbox; returns the `requests` response."""
    return requests.get(server.url + path, headers=headers, params=params, timeout=5)


def all_pages(server, path, headers, **params):
    """Follow _links.next until it is absent or a page is 204; returns (items, pages)."""
    url, items, pages = server.url + path, [], 0
    key = None
    while url:
        r = requests.get(url, headers=headers, params=params if pages == 0 else None, timeout=5)
        if r.status_code == 204:
            break
        assert r.status_code == 200, r.text
        body = r.json()
        key = key or next(iter(body["_embedded"]))
        items += body["_embedded"][key]
        pages += 1
        url = body["_links"].get("next", {}).get("href")
    return items, pages
