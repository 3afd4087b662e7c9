"""Each portal's API limits in Redis: one state shared by every process on every host.

Celery's `rate_limit` is per worker, and the in-process limiters (`adapters.http.RateLimiter`,
`adapters.bitrix24.limits`) are per process: with many workers on a portal each would spend
the portal's whole allowance. These classes keep the same interfaces, but the state lives in
Redis and every decision is one small Lua script (run by EVALSHA through redis-py's
`register_script`), so it is atomic across processes. The scripts read the Redis server's
clock (`TIME`), never the caller's, so the hosts' clocks do not matter; every key expires, so
a portal that goes idle leaves nothing behind.

- `RedisRateLimiter` (amoCRM, 7 requests/s per account): at most `limit` grants in any
  `per`-second window (a sliding-window log, a sorted set of grant times), and grants evenly
  spaced `gap = per / limit` apart, as `adapters.amocrm.client.PacedLimiter` spaces them. The
  spacing is handed out as reservations, first come first served: each caller is told its
  slot and sleeps until then (one round trip, no herd of waiters retrying the same instant),
  then commits its grant into the window, which admits it only while the window holds fewer
  than `limit` (a caller that overslept its slot cannot crowd a window).
- `RedisLeakyBucket` (Bitrix24, 50 deep, drains 2/s, kept `margin` under the server's depth):
  the bucket as a virtual schedule (GCRA): each acquire adds one and is told how long to
  wait until the bucket has drained back to its capacity.
- `RedisOperatingBudget` (Bitrix24, 480 s of server time per method per 10 minutes): the
  logic of `adapters.bitrix24.limits.OperatingBudget`, with each reservation a hold that
  expires (`hold_ttl_s`), so a process that dies mid-call cannot keep its share forever.

Build them through `RedisLimits` (the `adapters.limits.Limits` backend the adapters take).
Keys: `<prefix>:<kind>:{<portal>}:<what>`; the braces keep one portal's keys in one slot of a
Redis Cluster. redis-py is imported only by `RedisLimits.from_url`: it is the `fleet` extra.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from typing import Callable

from adapters.bitrix24.limits import parse_reset

PREFIX = "crm:limits"
HOLD_TTL_S = 600.0  # a reservation of operating time outlives any call and its retries
IDLE_TTL_S = 1200  # a method's budget state: twice the server's 10-minute window
DEFAULT_COST_S = 0.2  # as OperatingBudget: expected seconds per call before any report
WAIT_S = 0.05  # as OperatingBudget: in-flight calls will report a fresher total
MAX_WAIT_S = 30.0  # one sleep at most; then ask again

_LUA_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function f(x) return string.format('%.17g', x) end
"""

# KEYS[1] next free slot (unix s), KEYS[2] grants in the window (sorted set, score = unix s)
# ARGV limit, per, gap, phase ('reserve' | 'commit'), member
# -> {granted (1|0), seconds to wait, grant time or reserved slot}
RATE_LUA = (
    _LUA_PRELUDE
    + """
local limit, per, gap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if ARGV[4] == 'reserve' and gap > 0 then
  local at = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0') or 0)
  redis.call('SET', KEYS[1], f(at + gap), 'PX', math.ceil((at + gap - now + per) * 1000))
  if at > now then return {0, f(at - now), f(at)} end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', f(now - per))
if redis.call('ZCARD', KEYS[2]) < limit then
  redis.call('ZADD', KEYS[2], f(now), ARGV[5])
  redis.call('PEXPIRE', KEYS[2], math.ceil(per * 1000) + 1000)
  return {1, '0', f(now)}
end
local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
return {0, f(math.max(0, tonumber(oldest[2]) + per - now)), f(now)}
"""
)

# KEYS[1] the bucket (hash: level, at); ARGV capacity, drain, op ('acquire' | 'penalise')
# -> {seconds to wait, the time the request may go, level}
BUCKET_LUA = (
    _LUA_PRELUDE
    + """
local capacity, drain = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'level', 'at')
local level = tonumber(v[1]) or 0
local at = tonumber(v[2]) or now
level = math.max(0, level - math.max(0, now - at) * drain)
local wait = 0
if ARGV[3] == 'acquire' then
  level = level + 1
  wait = math.max(0, (level - capacity) / drain)
else
  level = math.max(level, capacity)
end
redis.call('HSET', KEYS[1], 'level', f(level), 'at', f(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(level / drain * 1000) + 1000)
return {f(wait), f(now + wait), f(level)}
"""
)

# KEYS per method: its state (hash), its holds (sorted set 'token|seconds' -> expiry)
# ARGV budget, safety, hold ttl, token, idle ttl, then calls wanted per method
# -> {1, n, '0', seconds held per method...} or {0, 0, seconds to wait}
TAKE_LUA = (
    _LUA_PRELUDE
    + """
local budget, safety, hold_ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local token, idle = ARGV[4], tonumber(ARGV[5])
local nm = #KEYS / 2
local n = 0
for i = 1, nm do n = math.max(n, tonumber(ARGV[5 + i])) end
local function floordiv(a, b)  -- Python's a // b, so the answers match OperatingBudget's
  local mod = math.fmod(a, b)
  local div = (a - mod) / b
  if mod ~= 0 and ((b < 0) ~= (mod < 0)) then div = div - 1 end
  local fl = math.floor(div)
  if div - fl > 0.5 then fl = fl + 1 end
  return fl
end
local wait, known, cost = 0, {}, {}
for i = 1, nm do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  redis.call('ZREMRANGEBYSCORE', z, '-inf', f(now))
  local inflight = 0
  for _, m in ipairs(redis.call('ZRANGE', z, 0, -1)) do
    inflight = inflight + (tonumber(string.match(m, '|([^|]*)$')) or 0)
  end
  local v = redis.call('HMGET', h, 'operating', 'known', 'reset_at', 'cost', 'blocked_until',
                       'probed_at')
  local operating, reset_at = tonumber(v[1]) or 0, tonumber(v[3])
  known[i], cost[i] = v[2] == '1', tonumber(v[4]) or %(cost)s
  local blocked, probed = tonumber(v[5]) or 0, tonumber(v[6]) or 0
  if blocked > now then
    wait = math.max(wait, blocked - now)
  elseif not known[i] then
    if inflight > 0 then wait = math.max(wait, %(pause)s) end
    n = math.min(n, 1)
  else
    local fit = floordiv(budget - safety - operating - inflight, cost[i])
    if fit >= 1 then
      n = math.min(n, fit)
    elseif inflight > 0 then
      wait = math.max(wait, %(pause)s)
    elseif reset_at and reset_at > now then
      wait = math.max(wait, reset_at - now + %(pause)s)
    elseif now - probed < 1.0 then
      wait = math.max(wait, probed + 1.0 - now)
    else
      redis.call('HSET', h, 'known', '0')
      known[i] = false
      n = math.min(n, 1)
    end
  end
  redis.call('EXPIRE', h, math.max(idle, redis.call('TTL', h)))
end
if wait > 0 then return {0, 0, f(wait)} end
local out = {1, n, '0'}
for i = 1, nm do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  if not known[i] then redis.call('HSET', h, 'probed_at', f(now)) end
  local amount = f(n * cost[i])
  redis.call('ZADD', z, f(now + hold_ttl), token .. '|' .. amount)
  redis.call('EXPIRE', z, math.ceil(hold_ttl) + 1)
  redis.call('EXPIRE', h, math.max(idle, redis.call('TTL', h)))
  out[#out + 1] = amount
end
return out
"""
    % {"cost": DEFAULT_COST_S, "pause": WAIT_S}
)

# KEYS the holds (sorted sets); ARGV their members, one each
RELEASE_LUA = """
for i = 1, #KEYS do redis.call('ZREM', KEYS[i], ARGV[i]) end
return 1
"""

# KEYS[1] a method's state; ARGV idle ttl, operating, reset_at, duration ('' = not reported)
OBSERVE_LUA = """
redis.call('HSET', KEYS[1], 'known', '1')
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'operating', ARGV[2]) end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'reset_at', ARGV[3]) end
if ARGV[4] ~= '' then
  local cost = tonumber(redis.call('HGET', KEYS[1], 'cost')) or %(cost)s
  cost = 0.7 * cost + 0.3 * math.max(tonumber(ARGV[4]), 0.01)
  redis.call('HSET', KEYS[1], 'cost', string.format('%%.17g', cost))
end
redis.call('EXPIRE', KEYS[1], math.max(tonumber(ARGV[1]), redis.call('TTL', KEYS[1])))
return 1
""" % {"cost": DEFAULT_COST_S}

# KEYS[1] a method's state; ARGV idle ttl, until ('' = the reset time, else a minute)
BLOCK_LUA = (
    _LUA_PRELUDE
    + """
local reset_at = tonumber(redis.call('HGET', KEYS[1], 'reset_at'))
local till = tonumber(ARGV[2])
if not till or till <= now then
  if reset_at and reset_at > now then till = reset_at else till = now + 60 end
end
local blocked = math.max(tonumber(redis.call('HGET', KEYS[1], 'blocked_until')) or 0, till)
redis.call('HSET', KEYS[1], 'blocked_until', f(blocked), 'known', '0')
redis.call('EXPIRE', KEYS[1], math.max(tonumber(ARGV[1]), math.ceil(blocked - now) + 60))
return f(blocked)
"""
)

# KEYS[1] a method's state, KEYS[2] its holds -> {hash fields..., in-flight seconds, now}
STATE_LUA = (
    _LUA_PRELUDE
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', f(now))
local inflight = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  inflight = inflight + (tonumber(string.match(m, '|([^|]*)$')) or 0)
end
local v = redis.call('HMGET', KEYS[1], 'operating', 'known', 'reset_at', 'cost', 'blocked_until')
return {v[1], v[2], v[3], v[4], v[5], f(inflight), f(now)}
"""
)


class _Scripts:
    """The scripts, registered once per Redis client (EVALSHA; loaded again after a flush)."""

    def __init__(self, redis):
        self.rate = redis.register_script(RATE_LUA)
        self.bucket = redis.register_script(BUCKET_LUA)
        self.take = redis.register_script(TAKE_LUA)
        self.release = redis.register_script(RELEASE_LUA)
        self.observe = redis.register_script(OBSERVE_LUA)
        self.block = redis.register_script(BLOCK_LUA)
        self.state = redis.register_script(STATE_LUA)


_ids = itertools.count()


def _token() -> str:
    """Unique across processes and hosts: random bytes, then a per-process counter."""
    return f"{os.urandom(8).hex()}.{next(_ids)}"


class RedisRateLimiter:
    """At most `rate` calls in any `per`-second window across every process, evenly spaced.

    `limit` and `per` are computed as `adapters.http.RateLimiter` does (a rate under 1/s is
    one call per `1/rate` s); `gap = per / limit` as amoCRM's `PacedLimiter`.
    """

    def __init__(
        self,
        scripts: _Scripts,
        key: str,
        rate: float,
        per: float = 1.0,
        paced: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.limit = max(1, int(rate * per)) if rate * per >= 1 else 1
        self.per = per if rate * per >= 1 else 1.0 / rate
        self.gap = self.per / self.limit if paced else 0.0
        self.key, self.sleep = key, sleep
        self._script = scripts.rate
        self._keys = [f"{key}:next", f"{key}:window"]
        self.last_grant: float | None = None  # the server's time of this object's last grant
        self.round_trips = 0
        self._lock = threading.Lock()  # the counters: one limiter serves a source's threads

    def _call(self, phase: str, member: str) -> tuple[bool, float, float]:
        with self._lock:
            self.round_trips += 1
        ok, wait, at = self._script(
            keys=self._keys, args=[self.limit, repr(self.per), repr(self.gap), phase, member]
        )
        return bool(ok), float(wait), float(at)

    def acquire(self) -> float:
        """Block until this call may go; returns the server's time of the grant."""
        member, phase = _token(), "reserve"
        while True:
            ok, wait, at = self._call(phase, member)
            if ok:
                with self._lock:
                    self.last_grant = max(at, self.last_grant or at)
                return at
            phase = "commit"  # the slot is ours: after it only the window may hold us back
            self.sleep(wait + 0.001)


class RedisLeakyBucket:
    """Bitrix24's request bucket across every process: `acquire()` blocks until one more
    request fits; `penalise()` when the server said QUERY_LIMIT_EXCEEDED."""

    def __init__(
        self,
        scripts: _Scripts,
        key: str,
        size: int = 50,
        drain: float = 2.0,
        margin: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.capacity = max(1.0, size - margin)
        self.drain = drain
        self.key, self.sleep = key, sleep
        self._script = scripts.bucket
        self.round_trips = 0
        self._lock = threading.Lock()  # the counter: one bucket serves a source's threads

    def reserve(self) -> tuple[float, float]:
        """Add one request to the bucket: (seconds to wait before sending it, the server's
        time it may go). `acquire()` is this and the sleep."""
        with self._lock:
            self.round_trips += 1
        wait, at, _ = self._script(keys=[self.key], args=[repr(self.capacity), repr(self.drain), "acquire"])
        return float(wait), float(at)

    def acquire(self) -> float:
        """Block until one more request fits; returns the server's time it may go."""
        wait, at = self.reserve()
        if wait > 0:
            self.sleep(wait)
        return at

    def penalise(self) -> None:
        self._script(keys=[self.key], args=[repr(self.capacity), repr(self.drain), "penalise"])


class Held(dict):
    """A reservation from `RedisOperatingBudget.take`: seconds per method, and its holds."""

    def __init__(self, amounts: dict[str, float], members: dict[str, str]):
        super().__init__(amounts)
        self.members = members


class RedisOperatingBudget:
    """`adapters.bitrix24.limits.OperatingBudget`, its state shared by every process.

    Same calls: `take({method: wanted}) -> (n, held)` waits for room and reserves;
    `release(held)`, `observe(method, time_info)`, `block(method, until)`, `state(method)`.
    Times are the Redis server's unix time (Bitrix24 reports `operating_reset_at` in unix time).
    """

    def __init__(
        self,
        scripts: _Scripts,
        key: str,
        budget_s: float = 480.0,
        safety_s: float | None = None,
        hold_ttl_s: float = HOLD_TTL_S,
        idle_ttl_s: int = IDLE_TTL_S,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.budget = budget_s
        self.safety = safety_s if safety_s is not None else max(5.0, 0.02 * budget_s)
        self.key, self.sleep = key, sleep
        self.hold_ttl_s, self.idle_ttl_s = hold_ttl_s, int(idle_ttl_s)
        self._s = scripts
        self._lock = threading.Lock()
        self.waited_s = 0.0

    def _keys(self, method: str) -> tuple[str, str]:
        return f"{self.key}:{method}", f"{self.key}:{method}:holds"

    def take(self, methods: dict[str, int]) -> tuple[int, Held]:
        """Wait for room; returns (calls per method that fit, reservation for `release`)."""
        names = list(methods)
        keys = [k for m in names for k in self._keys(m)]
        while True:
            token = _token()
            r = self._s.take(
                keys=keys,
                args=[
                    repr(self.budget),
                    repr(self.safety),
                    repr(self.hold_ttl_s),
                    token,
                    self.idle_ttl_s,
                    *(int(methods[m]) for m in names),
                ],
            )
            if int(r[0]):
                amounts = [x.decode() if isinstance(x, bytes) else str(x) for x in r[3:]]
                return int(r[1]), Held(
                    {m: float(a) for m, a in zip(names, amounts)},
                    {m: f"{token}|{a}" for m, a in zip(names, amounts)},
                )
            wait = min(float(r[2]), MAX_WAIT_S)
            with self._lock:
                self.waited_s += wait  # per caller: parallel workers add up
            self.sleep(wait)

    def release(self, held: dict[str, float]) -> None:
        members = getattr(held, "members", None)
        if members:
            self._s.release(keys=[self._keys(m)[1] for m in members], args=list(members.values()))

    def observe(self, method: str, time_info: dict | None) -> None:
        """Feed one `time` object (a call's, or a batch sub-call's `result_time[key]`)."""
        operating = reset = duration = ""
        if isinstance(time_info, dict):
            operating = _number(time_info.get("operating"))
            at = parse_reset(time_info.get("operating_reset_at"))
            reset = repr(at) if at is not None else ""
            duration = _number(time_info.get("duration", time_info.get("processing")))
        self._s.observe(keys=[self._keys(method)[0]], args=[self.idle_ttl_s, operating, reset, duration])

    def block(self, method: str, until: float | None) -> None:
        """The server refused `method` (OPERATION_TIME_LIMIT): no call to it before `until`."""
        self._s.block(
            keys=[self._keys(method)[0]], args=[self.idle_ttl_s, repr(float(until)) if until else ""]
        )

    def state(self, method: str) -> dict:
        raw = self._s.state(keys=list(self._keys(method)))
        v = [x.decode() if isinstance(x, bytes) else x for x in raw]
        num = lambda x, d: float(x) if x not in (None, "") else d  # noqa: E731
        return {
            "operating": num(v[0], 0.0),
            "known": v[1] == "1",
            "reset_at": num(v[2], None),
            "inflight": num(v[5], 0.0),
            "cost": num(v[3], DEFAULT_COST_S),
            "blocked_until": num(v[4], 0.0),
            "now": num(v[6], 0.0),
        }


def _number(value) -> str:
    """A reported number as the scripts take it; '' when absent or not a number."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return ""
    return repr(x) if math.isfinite(x) else ""


class RedisLimits:
    """The Redis backend of `adapters.limits.Limits`: limiters keyed by CRM kind and portal.

    `RedisLimits(redis_client)` or `RedisLimits.from_url("redis://host:6379/0")`; hand it to
    `Crm.make_adapter(source, tokens, limits=...)`. One instance (one connection pool) is
    meant to serve every portal a worker process touches.
    """

    def __init__(
        self, redis, *, prefix: str = PREFIX, hold_ttl_s: float = HOLD_TTL_S, idle_ttl_s: int = IDLE_TTL_S
    ):
        self.redis, self.prefix = redis, prefix
        self.hold_ttl_s, self.idle_ttl_s = hold_ttl_s, idle_ttl_s
        self.scripts = _Scripts(redis)

    @classmethod
    def from_url(cls, url: str, **kwargs) -> "RedisLimits":
        import redis  # the `fleet` extra; the local engine never gets here

        return cls(redis.Redis.from_url(url), **kwargs)

    def namespaced(self, role: str) -> "RedisLimits":
        """The same Redis, with keys of their own for `role` (a share of a portal's limits kept
        apart from the rest, such as webhook refreshes beside the jobs)."""
        return RedisLimits(
            self.redis, prefix=f"{self.prefix}:{role}", hold_ttl_s=self.hold_ttl_s, idle_ttl_s=self.idle_ttl_s
        )

    def key(self, kind: str, portal: str, what: str) -> str:
        return f"{self.prefix}:{kind}:{{{portal}}}:{what}"

    def rate_limiter(self, kind: str, portal: str, rate: float, per: float = 1.0) -> RedisRateLimiter:
        return RedisRateLimiter(self.scripts, self.key(kind, portal, "rate"), rate, per)

    def leaky_bucket(
        self, kind: str, portal: str, size: int = 50, drain: float = 2.0, margin: float = 2.0
    ) -> RedisLeakyBucket:
        return RedisLeakyBucket(self.scripts, self.key(kind, portal, "bucket"), size, drain, margin)

    def operating_budget(
        self, kind: str, portal: str, budget_s: float = 480.0, safety_s: float | None = None
    ) -> RedisOperatingBudget:
        return RedisOperatingBudget(
            self.scripts,
            self.key(kind, portal, "budget"),
            budget_s,
            safety_s,
            hold_ttl_s=self.hold_ttl_s,
            idle_ttl_s=self.idle_ttl_s,
        )
