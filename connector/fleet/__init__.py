"""The fleet engine's shared state in Redis (Celery 5 + Redis workers on many hosts).

- `connector.fleet.lease`: one portal's job never runs twice at once anywhere (a lease lock).
- The portals' API limits are the adapters' business: `adapters.redis_limits.RedisLimits`,
  passed to `Crm.make_adapter(source, tokens, limits=...)`.

redis-py is the `fleet` extra (`pip install 'crm-connector[fleet]'`); nothing here imports it
until a Redis URL is used, so the local engine never needs it.
"""
