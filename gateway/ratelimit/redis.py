"""Redis-backed limiter shared by every gateway process; fails open to an in-process limiter when Redis is away."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError, RedisError

from gateway.ratelimit import Check, Limit, Limiter
from gateway.ratelimit.memory import MemoryLimiter

logger = logging.getLogger(__name__)

_WARN_EVERY = 5.0  # seconds between "Redis unavailable" warnings, so an outage does not flood the log

# GCRA over every rate key, all-or-nothing, plus the look-up of keys (the de-dup fast path): one atomic round trip per
# request. Times are whole microseconds from Redis' own clock, so every gateway process agrees on "now" and Lua's
# doubles stay exact. KEYS: the n rate keys, then the look-up keys. ARGV: n, then interval_us, tolerance_us, cost per
# rate key. Returns {microseconds until the request fits (0 = allowed and charged), 1-based positions of the look-up
# keys that exist}.
_CHECK_SCRIPT = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local n = tonumber(ARGV[1])
local new_tats = {}
local wait = 0
for i = 1, n do
  local key = KEYS[i]
  local tat = new_tats[key] or tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local new_tat = tat + tonumber(ARGV[3 * i + 1]) * tonumber(ARGV[3 * i - 1])
  local over = new_tat - now - tonumber(ARGV[3 * i])
  if over > wait then wait = over end
  new_tats[key] = new_tat
end
if wait == 0 then
  for key, tat in pairs(new_tats) do
    -- The key expires when its bucket is full again, which is the same as having no key.
    redis.call('SET', key, string.format('%.0f', tat), 'PX', math.max(1, math.ceil((tat - now) / 1000)))
  end
end
local seen = {}
for j = n + 1, #KEYS do
  if redis.call('EXISTS', KEYS[j]) == 1 then seen[#seen + 1] = j - n end
end
return {wait, seen}
"""


class RedisLimiter:
    """GCRA and the de-dup keys in Redis, answering from `fallback` whenever Redis errors or times out.

    After a failure Redis is skipped for `cooldown` seconds (a small circuit breaker), so a dead Redis costs one
    timeout per cooldown rather than one per request. `stats` counts `redis_errors` (failed Redis calls) and
    `fail_open` (calls answered by the fallback). While Redis is away there is no de-dup fast path: the store's
    unique constraint answers retried events alone.
    """

    keeps_keys = True

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.1,
        fallback: Limiter | None = None,
        cooldown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stats: dict[str, int] = {"redis_errors": 0, "fail_open": 0}
        self._redis = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # One immediate retry on a connection error replaces a pooled connection that went stale (e.g. Redis
            # restarted); timeouts are not retried, so one call waits at most about `timeout`.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self._check_script = self._redis.register_script(_CHECK_SCRIPT)
        self._fallback = fallback if fallback is not None else MemoryLimiter()
        self._cooldown = cooldown
        self._clock = clock
        self._skip_redis_until = -math.inf
        self._last_warning = -math.inf

    async def check(self, limits: Sequence[Limit], lookup: Sequence[str] = ()) -> Check:
        if not limits and not lookup:
            return Check(allowed=True, retry_after=0.0, seen=frozenset())
        if self._clock() >= self._skip_redis_until:
            keys = [limit.key for limit in limits]
            keys += lookup
            args: list[int] = [len(limits)]
            for limit in limits:
                args += (limit.rate.interval_us, limit.rate.tolerance_us, limit.cost)
            try:
                wait_us, seen_positions = await self._check_script(keys, args)
            except RedisError as exc:
                self._redis_failed(exc)
            else:
                return Check(
                    allowed=wait_us == 0,
                    retry_after=wait_us / 1_000_000,
                    seen=frozenset(lookup[position - 1] for position in seen_positions),
                )
        self.stats["fail_open"] += 1
        return await self._fallback.check(limits, lookup)

    async def mark(self, keys: Sequence[str], ttl: int) -> None:
        if not keys:
            return
        if self._clock() >= self._skip_redis_until:
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.set(key, 1, ex=ttl)
            try:
                await pipe.execute()
                return
            except RedisError as exc:
                self._redis_failed(exc)
        self.stats["fail_open"] += 1  # the ids are in the store all the same; only the fast path misses them

    async def ping(self) -> bool:
        """Whether Redis answers now (ignores the circuit breaker, so readiness shows the truth)."""
        try:
            return bool(await self._redis.ping())
        except RedisError:
            return False

    async def aclose(self) -> None:
        await self._redis.aclose()
        await self._fallback.aclose()

    def _redis_failed(self, exc: RedisError) -> None:
        now = self._clock()
        self.stats["redis_errors"] += 1
        self._skip_redis_until = now + self._cooldown
        if now - self._last_warning >= _WARN_EVERY:
            self._last_warning = now
            # redis-py's messages name host and port at most, never the URL's password.
            logger.warning(
                "Redis unavailable (%s: %s); rate limits and de-dup answer from the in-process limiter, "
                "retrying Redis every %.1fs", type(exc).__name__, exc, self._cooldown,
            )
