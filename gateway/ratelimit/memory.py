"""In-process GCRA limiter: the limiter without Redis, and the fallback while Redis is unreachable."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from gateway.ratelimit import Check, Limit

# Sweep expired keys whenever the table has doubled since the last sweep (but not below this size), so sweeping
# costs O(1) per check amortised while the table stays within twice its live size.
_MIN_SWEEP_SIZE = 10_000
_NOTHING_SEEN: frozenset[str] = frozenset()
_ALLOWED = Check(True, 0.0, _NOTHING_SEEN)  # the usual answer, built once


class MemoryLimiter:
    """GCRA per key in a dict of theoretical arrival times.

    It keeps no de-dup keys (`keeps_keys` is False): retried events are rare and the store's unique constraint answers
    them, while a memory of ids cost every request ~1 µs per event. `clock` returns seconds (monotonic); tests inject
    a controllable one. State is per process, so with several gateway processes each enforces the limits on its own
    share of the traffic.
    """

    keeps_keys = False

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.stats: dict[str, int] = {}
        self._clock = clock
        self._tat_us: dict[str, int] = {}
        self._sweep_at_size = _MIN_SWEEP_SIZE

    async def check(self, limits: Sequence[Limit], lookup: Sequence[str] = ()) -> Check:
        now_us = int(self._clock() * 1_000_000)
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
        if over_us > 0:
            return Check(False, over_us / 1_000_000, _NOTHING_SEEN)
        tats.update(charged)
        if len(tats) >= self._sweep_at_size:
            self._sweep(now_us)
        return _ALLOWED

    async def mark(self, keys: Sequence[str], ttl: int) -> None:
        pass  # nothing kept; see the class docstring

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        pass

    def _sweep(self, now_us: int) -> None:
        # A key whose arrival time has passed has a full bucket, exactly like a key never seen.
        self._tat_us = {key: tat for key, tat in self._tat_us.items() if tat > now_us}
        self._sweep_at_size = max(_MIN_SWEEP_SIZE, 2 * len(self._tat_us))
