"""Shared fixtures. Each sandbox's fixtures live in their own module, pulled in here."""

pytest_plugins = ["tests.fixtures_amocrm", "tests.fixtures_bitrix24", "tests.redis_server"]
