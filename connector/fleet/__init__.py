"""The fleet engine: jobs on Celery workers through a Redis broker (Celery 5).

- `app`: the Celery app built from `[engine]`; `tasks`: the one task, a source's job;
  `dispatch`: `run --once` and the scheduler queue jobs; `board`: each source's job state in
  Redis for `status`; `lease`: one portal's job never runs twice at once anywhere.
- The portals' API limits are the adapters' business: `adapters.redis_limits.RedisLimits`,
  passed to `Crm.make_adapter(source, tokens, limits=...)`.

redis-py and Celery are the `fleet` extra (`pip install 'crm-connector[fleet]'`); nothing here
imports them until the celery engine is used, so the local engine never needs them.
"""
