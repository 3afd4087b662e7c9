"""Shared fixtures. Each sandbox's fixtures live in their own module, pulled in here."""

from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures_amocrm", "tests.fixtures_bitrix24", "tests.redis_server"]

E2E = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(items):
    """Every test under tests/e2e/ is an end-to-end one: `pytest -m "not e2e"` is the quick loop."""
    for item in items:
        if E2E in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)
