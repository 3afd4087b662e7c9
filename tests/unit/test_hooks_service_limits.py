"""`serve`'s own requests (the account read that checks deliveries, Bitrix24's offline events)
take the portal's refresh share of its limits where the workers' refreshes take it: in Redis
on the celery engine, in the process on the local one. A share kept in serve's process beside
the workers' in Redis would let the portal see more than its limit (amoCRM answers 429)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from adapters.http import RateLimiter
from adapters.redis_limits import RedisLimits, RedisRateLimiter
from connector.config import loader
from connector.hooks.service import Service

SECRET = "s" * 32


def config(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(f"""
[storage]
path = "{tmp_path / "mirror.db"}"

[[sources]]
name = "amo"
kind = "amocrm"
base_url = "https://acme.amocrm.ru"
access_token = "token"
webhook_secret = "{SECRET}"
""")
    return loader.load(str(path))


def limiter(service: Service, name: str):
    return service._adapters[name].client.http.limiter


@pytest.mark.redis
def test_on_the_celery_engine_serve_takes_the_refresh_share_in_redis(tmp_path, redis_client, redis_prefix):
    fleet = SimpleNamespace(limits=RedisLimits(redis_client, prefix=redis_prefix))
    service = Service(config(tmp_path), fleet)
    try:
        got = limiter(service, "amo")
        assert isinstance(got, RedisRateLimiter)
        assert got.key == f"{redis_prefix}:refresh:amocrm:{{acme.amocrm.ru}}:rate"
    finally:
        service.close()


def test_on_the_local_engine_its_share_stays_in_the_process(tmp_path):
    service = Service(config(tmp_path), None)
    try:
        assert isinstance(limiter(service, "amo"), RateLimiter)
    finally:
        service.close()
