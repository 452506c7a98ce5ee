"""Rate limits, shared by every gateway process through Redis or kept in-process.

Limits use GCRA (the generic cell rate algorithm): per key one stored time, the theoretical arrival time (TAT), so a
bucket costs one value and refills continuously instead of in steps. With Redis, the request's one round trip also
looks up keys for the de-dup fast path (`gateway/dedup.py` owns those keys; `check(..., lookup=...)` and `mark` carry
them).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple, Protocol

__all__ = ["Check", "Limit", "Limiter", "Rate", "create_limiter"]

_UNIT_SECONDS = {
    "s": 1.0, "sec": 1.0, "second": 1.0,
    "min": 60.0, "minute": 60.0,
    "h": 3600.0, "hour": 3600.0,
    "d": 86400.0, "day": 86400.0,
}
_RATE_SYNTAX = re.compile(r"(?P<count>\d+)\s*/\s*(?P<unit>[a-z]+)(?:\s+burst\s+(?P<burst>\d+))?", re.IGNORECASE)


@dataclass(frozen=True)
class Rate:
    """`count` requests per `period` seconds, with room for a burst of `burst` requests at once."""

    count: int
    period: float
    burst: int

    def __post_init__(self) -> None:
        if self.count < 1 or self.period <= 0 or self.burst < 1:
            raise ValueError(f"a rate needs count >= 1, period > 0 and burst >= 1, got {self!r}")

    @classmethod
    def parse(cls, text: str) -> Rate:
        """Parse `"20/s"`, `"600/min"`, `"5000/h"` or `"20/s burst 100"`; the burst defaults to the count."""
        match = _RATE_SYNTAX.fullmatch(text.strip())
        unit = match and _UNIT_SECONDS.get(match["unit"].lower())
        if not match or unit is None:
            raise ValueError(
                f"invalid rate {text!r}: expected '<count>/<unit>' with an optional ' burst <n>', "
                f"e.g. '20/s', '600/min' or '20/s burst 100' (units: s, min, h, d)"
            )
        count = int(match["count"])
        burst = int(match["burst"]) if match["burst"] else count
        if count < 1 or burst < 1:
            raise ValueError(f"invalid rate {text!r}: count and burst must be at least 1")
        return cls(count=count, period=unit, burst=burst)

    # Both limiters count in whole microseconds, so a burst of n intervals is exactly n * interval_us: no float drift
    # denies the last request of a burst, and Redis (whose Lua numbers are doubles) keeps integers exact.
    @cached_property
    def interval_us(self) -> int:
        """Microseconds one unit of cost occupies the bucket (GCRA's emission interval)."""
        return max(1, round(self.period * 1_000_000 / self.count))

    @cached_property
    def tolerance_us(self) -> int:
        """How far ahead of now the theoretical arrival time may run: a full bucket is `burst` intervals deep."""
        return self.burst * self.interval_us


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~3x, and every request builds three
class Limit:
    """One bucket to charge. `key` is namespaced by the caller, e.g. `"s:{project}:{session}"` or `"p:{project}"`.

    A `cost` above the rate's burst never fits, so such a request is always denied.
    """

    key: str
    rate: Rate
    cost: int = 1

    def __post_init__(self) -> None:
        if self.cost < 0:
            raise ValueError(f"a limit's cost must not be negative, got {self.cost}")


class Check(NamedTuple):  # a NamedTuple: built on every request, and a frozen dataclass costs ~5x as much
    allowed: bool
    retry_after: float
    """Seconds until the request would fit; 0 when allowed."""
    seen: frozenset[str]
    """The `lookup` keys that exist (set by `mark`); none when the limiter keeps no keys."""


class Limiter(Protocol):
    stats: dict[str, int]
    """Counters for /metrics, e.g. `{"redis_errors": n, "fail_open": n}`."""
    keeps_keys: bool
    """Whether `mark` keeps keys that `check` can look up (Redis, shared by every gateway process). The in-process
    limiter keeps none: `lookup` finds nothing there and `mark` does nothing."""

    async def check(self, limits: Sequence[Limit], lookup: Sequence[str] = ()) -> Check:
        """Charge every limit, or none of them when any denies; in the same round trip, report which `lookup` keys
        exist."""
        ...

    async def mark(self, keys: Sequence[str], ttl: int) -> None:
        """Set `keys` for `ttl` seconds (best effort: a failure is counted, not raised)."""
        ...

    async def ping(self) -> bool: ...

    async def aclose(self) -> None: ...


def create_limiter(redis_url: str | None, *, redis_timeout: float = 0.1) -> Limiter:
    """A Redis-backed limiter that fails open to an in-process one, or just the in-process one without a URL."""
    from gateway.ratelimit.memory import MemoryLimiter

    if not redis_url:
        return MemoryLimiter()
    from gateway.ratelimit.redis import RedisLimiter

    return RedisLimiter(redis_url, timeout=redis_timeout, fallback=MemoryLimiter())
