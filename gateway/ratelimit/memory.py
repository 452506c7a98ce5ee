"""In-process GCRA limiter: the limiter without Redis, and the fallback while Redis is unreachable."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from gateway.ratelimit import Check, Limit

# Sweep expired keys whenever the table has doubled since the last sweep (but not below this size), so sweeping
# costs O(1) per check amortised while the table stays within twice its live size.
_MIN_SWEEP_SIZE = 10_000
_NOTHING_SEEN: frozenset[str] = frozenset()
_ALLOWED = Check(True, 0.0, _NOTHING_SEEN)  # the usual answer, built once


class MemoryLimiter:
    """GCRA per key in a dict of theoretical arrival times, plus a bounded LRU of committed ids.

    `clock` returns seconds (monotonic); tests inject a controllable one. State is per process, so with several
    gateway processes each enforces the limits on its own share of the traffic.
    """

    def __init__(
        self,
        *,
        seen_ttl: float = 7 * 86400,
        max_seen: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stats: dict[str, int] = {}
        self._clock = clock
        self._seen_ttl = seen_ttl
        self._max_seen = max_seen
        self._tat_us: dict[str, int] = {}
        self._seen_until: OrderedDict[str, float] = OrderedDict()
        self._sweep_at_size = _MIN_SWEEP_SIZE

    async def check(self, limits: Sequence[Limit], ids: Sequence[str] = ()) -> Check:
        now = self._clock()
        now_us = int(now * 1_000_000)
        tats = self._tat_us
        charged: dict[str, int] = {}  # a key charged twice in one check sees its own first charge
        over_us = 0
        for limit in limits:
            key, rate = limit.key, limit.rate
            tat = charged.get(key) or tats.get(key, now_us)
            tat = (tat if tat > now_us else now_us) + limit.cost * rate.interval_us
            charged[key] = tat
            if tat - now_us - rate.tolerance_us > over_us:
                over_us = tat - now_us - rate.tolerance_us
        # Nearly every id is new: one set intersection finds the few to look at.
        seen = _NOTHING_SEEN
        if ids and self._seen_until and (hits := self._seen_until.keys() & ids):
            seen = frozenset(i for i in hits if self._is_seen(i, now))
        if over_us > 0:
            return Check(False, over_us / 1_000_000, seen)
        tats.update(charged)
        if len(tats) >= self._sweep_at_size:
            self._sweep(now_us)
        return _ALLOWED if seen is _NOTHING_SEEN else Check(True, 0.0, seen)

    async def remember(self, ids: Sequence[str]) -> None:
        until = self._clock() + self._seen_ttl
        seen = self._seen_until
        for event_id in ids:
            if event_id in seen:  # a new id goes to the end anyway
                seen.move_to_end(event_id)
            seen[event_id] = until
        for _ in range(len(seen) - self._max_seen):
            seen.popitem(last=False)

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        pass

    def _is_seen(self, event_id: str, now: float) -> bool:
        until = self._seen_until.get(event_id)
        if until is None:
            return False
        if until <= now:
            del self._seen_until[event_id]
            return False
        self._seen_until.move_to_end(event_id)  # a retried id tends to be retried again
        return True

    def _sweep(self, now_us: int) -> None:
        # A key whose arrival time has passed has a full bucket, exactly like a key never seen.
        self._tat_us = {key: tat for key, tat in self._tat_us.items() if tat > now_us}
        self._sweep_at_size = max(_MIN_SWEEP_SIZE, 2 * len(self._tat_us))
