from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import redis.asyncio

from gateway.ratelimit import Check, Limit, Rate, create_limiter
from gateway.ratelimit.memory import MemoryLimiter
from gateway.ratelimit.redis import RedisLimiter
from tests.servers import free_port

SLOW = Rate.parse("3/min")  # one slot per 20 s: a test's own run time never refills it
ROOMY = Rate.parse("1000/s")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def redis_limiter(redis_url):
    limiter = RedisLimiter(redis_url, timeout=1.0)
    yield limiter
    await limiter.aclose()
    # A shared-behaviour test that quietly fell back to memory would prove nothing about Redis.
    assert limiter.stats == {"redis_errors": 0, "fail_open": 0}


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def limiter(request, clock):
    if request.param == "memory":
        return MemoryLimiter(clock=clock)
    return request.getfixturevalue("redis_limiter")


async def charge(limiter, *limits: Limit, times: int = 1) -> list[Check]:
    return [await limiter.check(limits) for _ in range(times)]


# --- Rate.parse -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20/s", Rate(count=20, period=1, burst=20)),
        ("600/min", Rate(count=600, period=60, burst=600)),
        ("5000/h", Rate(count=5000, period=3600, burst=5000)),
        ("100000/d", Rate(count=100000, period=86400, burst=100000)),
        ("20/s burst 100", Rate(count=20, period=1, burst=100)),
        ("60/minute burst 5", Rate(count=60, period=60, burst=5)),
        ("  7 / SEC   Burst 9 ", Rate(count=7, period=1, burst=9)),
    ],
)
def test_parse(text, expected):
    assert Rate.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "20", "20/", "/s", "s/20", "0/s", "-1/s", "1.5/s", "20/fortnight", "20/m", "20 per second", "20/s burst",
     "20/s burst 0", "20/s burst -5", "20/s burst 10 extra", "20/s,burst 10"],
)
def test_parse_rejects(text):
    with pytest.raises(ValueError, match="invalid rate"):
        Rate.parse(text)


def test_rate_and_limit_reject_impossible_values():
    with pytest.raises(ValueError):
        Rate(count=0, period=1, burst=1)
    with pytest.raises(ValueError):
        Limit("k", ROOMY, cost=-1)


def test_rate_counts_in_whole_microseconds():
    rate = Rate.parse("3/s burst 4")
    assert rate.interval_us == 333_333
    assert rate.tolerance_us == 4 * 333_333


# --- GCRA: the same behaviour in memory and in Redis -------------------------------------------------------------


async def test_allows_the_burst_then_denies_with_retry_after(limiter):
    checks = await charge(limiter, Limit("k", SLOW), times=4)
    assert [c.allowed for c in checks] == [True, True, True, False]
    assert checks[0].retry_after == 0
    assert checks[3].retry_after == pytest.approx(20, abs=0.5)


async def test_burst_may_exceed_the_rate(limiter):
    checks = await charge(limiter, Limit("k", Rate.parse("1/min burst 5")), times=6)
    assert [c.allowed for c in checks] == [True] * 5 + [False]
    assert checks[5].retry_after == pytest.approx(60, abs=0.5)


async def test_cost_consumes_that_many_slots(limiter):
    rate = Rate.parse("10/min")  # a slot per 6 s
    assert (await limiter.check([Limit("k", rate, cost=4)])).allowed
    assert (await limiter.check([Limit("k", rate, cost=4)])).allowed
    denied = await limiter.check([Limit("k", rate, cost=4)])
    assert not denied.allowed
    assert denied.retry_after == pytest.approx(12, abs=0.5)  # two more slots must drain
    assert (await limiter.check([Limit("k", rate, cost=2)])).allowed


async def test_cost_above_the_burst_never_fits(limiter):
    check = await limiter.check([Limit("k", Rate.parse("5/s"), cost=6)])
    assert not check.allowed
    assert check.retry_after > 0


async def test_denied_request_charges_no_bucket(limiter):
    await charge(limiter, Limit("full", SLOW), times=3)
    for _ in range(5):
        assert not (await limiter.check([Limit("roomy", SLOW), Limit("full", SLOW)])).allowed
    # None of the five denied requests took a slot from the bucket that had room.
    assert [c.allowed for c in await charge(limiter, Limit("roomy", SLOW), times=4)] == [True, True, True, False]


async def test_retry_after_is_the_longest_wait_among_denying_limits(limiter):
    per_minute, per_hour = Rate.parse("1/min"), Rate.parse("1/h")
    await limiter.check([Limit("a", per_minute), Limit("b", per_hour)])
    check = await limiter.check([Limit("a", per_minute), Limit("b", per_hour)])
    assert not check.allowed
    assert check.retry_after == pytest.approx(3600, abs=0.5)


async def test_keys_are_independent(limiter):
    await charge(limiter, Limit("s:p:one", SLOW), times=3)
    assert not (await limiter.check([Limit("s:p:one", SLOW)])).allowed
    assert (await limiter.check([Limit("s:p:two", SLOW)])).allowed


async def test_a_key_given_twice_is_charged_twice(limiter):
    rate = Rate.parse("2/min")
    assert (await limiter.check([Limit("k", rate), Limit("k", rate)])).allowed
    assert not (await limiter.check([Limit("k", rate)])).allowed


@pytest.mark.redis
async def test_keys_are_seen_only_after_mark(redis_limiter):
    ids = ["p:a", "p:b", "p:c"]
    assert redis_limiter.keeps_keys
    assert (await redis_limiter.check([Limit("k", ROOMY)], ids)).seen == frozenset()
    await redis_limiter.mark(["p:a", "p:c"], 60)
    check = await redis_limiter.check([Limit("k", ROOMY)], ids)
    assert check.allowed
    assert check.seen == {"p:a", "p:c"}


@pytest.mark.redis
async def test_seen_is_reported_even_when_denied(redis_limiter):
    await redis_limiter.mark(["p:a"], 60)
    await charge(redis_limiter, Limit("k", SLOW), times=3)
    check = await redis_limiter.check([Limit("k", SLOW)], ["p:a"])
    assert not check.allowed
    assert check.seen == {"p:a"}


async def test_in_process_limiter_keeps_no_keys(clock):
    # In one process the store's unique constraint is the de-dup; the limiter says so, and the gateway asks it nothing.
    limiter = MemoryLimiter(clock=clock)
    assert not limiter.keeps_keys
    await limiter.mark(["p:a"], 60)
    assert await limiter.check([Limit("k", ROOMY)], ["p:a"]) == Check(allowed=True, retry_after=0.0, seen=frozenset())


async def test_check_without_limits_is_allowed(limiter):
    assert await limiter.check([]) == Check(allowed=True, retry_after=0.0, seen=frozenset())


async def test_ping(limiter):
    assert await limiter.ping()


# --- In-process: timing with a controllable clock, bounded memory -------------------------------------------------


async def test_request_fits_exactly_at_retry_after(clock):
    limiter = MemoryLimiter(clock=clock)
    rate = Rate.parse("2/s")
    await charge(limiter, Limit("k", rate), times=2)
    denied = await limiter.check([Limit("k", rate)])
    assert denied.retry_after == pytest.approx(0.5)
    clock.advance(denied.retry_after - 0.001)
    assert not (await limiter.check([Limit("k", rate)])).allowed
    clock.advance(0.001)
    assert (await limiter.check([Limit("k", rate)])).allowed
    assert not (await limiter.check([Limit("k", rate)])).allowed  # only one slot came back


async def test_refills_continuously_up_to_the_burst(clock):
    limiter = MemoryLimiter(clock=clock)
    rate = Rate.parse("10/s burst 5")
    assert all(c.allowed for c in await charge(limiter, Limit("k", rate), times=5))
    clock.advance(0.3)
    assert [c.allowed for c in await charge(limiter, Limit("k", rate), times=4)] == [True, True, True, False]
    clock.advance(3600)  # idling never banks more than the burst
    assert [c.allowed for c in await charge(limiter, Limit("k", rate), times=6)] == [True] * 5 + [False]


async def test_expired_keys_are_swept_as_the_table_grows(clock):
    limiter = MemoryLimiter(clock=clock)
    per_second = Rate.parse("1/s")
    for i in range(10_000):
        await limiter.check([Limit(f"s:p:{i}", per_second)])
    clock.advance(2)  # every "s:" bucket is full again
    for i in range(10_000):
        await limiter.check([Limit(f"ip:p:{i}", per_second)])
    # Live keys survive the sweeps (a swept live key would reopen its bucket); expired ones are gone.
    assert sorted(limiter._tat_us) == sorted(f"ip:p:{i}" for i in range(10_000))


# --- Redis: shared state, self-cleaning keys ----------------------------------------------------------------------


@pytest.fixture
async def redis_client(redis_url):
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.mark.redis
async def test_two_processes_share_limits_and_seen_ids(redis_url):
    first, second = RedisLimiter(redis_url, timeout=1.0), RedisLimiter(redis_url, timeout=1.0)
    try:
        await charge(first, Limit("s:p:1", SLOW), times=2)
        assert (await second.check([Limit("s:p:1", SLOW)])).allowed
        assert not (await first.check([Limit("s:p:1", SLOW)])).allowed
        await first.mark(["p:a"], 60)
        assert (await second.check([], ["p:a"])).seen == {"p:a"}
    finally:
        await first.aclose()
        await second.aclose()


@pytest.mark.redis
async def test_marked_keys_expire_after_their_ttl(redis_url, redis_client):
    limiter = RedisLimiter(redis_url, timeout=1.0)
    try:
        await limiter.mark(["p:a", "p:b"], 3600)
    finally:
        await limiter.aclose()
    for key in ["p:a", "p:b"]:
        assert 3590 <= await redis_client.ttl(key) <= 3600


@pytest.mark.redis
async def test_rate_keys_expire_when_their_bucket_is_full_again(redis_limiter, redis_client):
    await charge(redis_limiter, Limit("s:p:1", SLOW), times=2)
    assert 39_000 < await redis_client.pttl("s:p:1") <= 40_000
    await redis_limiter.check([Limit("s:p:1", SLOW)])
    assert 59_000 < await redis_client.pttl("s:p:1") <= 60_000
    await redis_limiter.check([Limit("s:p:1", SLOW)])  # denied: the key is left as it was
    assert 59_000 < await redis_client.pttl("s:p:1") <= 60_000


@pytest.mark.redis
async def test_redis_request_fits_after_retry_after(redis_limiter):
    rate = Rate.parse("20/s burst 2")
    await charge(redis_limiter, Limit("k", rate), times=2)
    denied = await redis_limiter.check([Limit("k", rate)])
    assert not denied.allowed
    assert 0 < denied.retry_after <= 0.05
    await asyncio.sleep(denied.retry_after)  # the wait itself is what is under test
    assert (await redis_limiter.check([Limit("k", rate)])).allowed


@pytest.mark.redis
async def test_script_is_reloaded_after_script_flush(redis_limiter, redis_client):
    await redis_limiter.check([Limit("k", SLOW)])
    await redis_client.script_flush()
    assert (await redis_limiter.check([Limit("k", SLOW)])).allowed


# --- Redis away: fail open -------------------------------------------------------------------------------------


@pytest.mark.redis
async def test_fails_open_while_redis_is_down_and_recovers(redis_server, redis_url, clock, caplog):
    limiter = RedisLimiter(redis_url, timeout=0.1, cooldown=1.0, clock=clock)
    try:
        assert (await limiter.check([Limit("k", SLOW)])).allowed
        redis_server.stop()

        started = time.monotonic()
        checks = await charge(limiter, Limit("k", SLOW), times=4)
        await limiter.mark(["p:a"], 60)
        assert time.monotonic() - started < 0.5
        # The in-process fallback still enforces the limit, on its own fresh state; the store alone de-duplicates.
        assert [c.allowed for c in checks] == [True, True, True, False]
        assert (await limiter.check([], ["p:a"])).seen == frozenset()
        # One failed call opened the breaker; the rest skipped Redis without waiting for it.
        assert limiter.stats == {"redis_errors": 1, "fail_open": 6}
        assert not await limiter.ping()
        assert caplog.text.count("Redis unavailable") == 1  # one warning per outage, not one per request

        clock.advance(1.0)  # the breaker lets a call through again: it fails and re-opens
        await limiter.check([Limit("k", SLOW)])
        assert limiter.stats["redis_errors"] == 2

        redis_server.start()
        assert await limiter.ping()
        clock.advance(1.0)
        assert (await limiter.check([Limit("k", SLOW)])).allowed  # a fresh Redis: an empty bucket
        assert limiter.stats == {"redis_errors": 2, "fail_open": 7}
    finally:
        if redis_server.proc is None:
            redis_server.start()
        await limiter.aclose()


async def test_warning_never_shows_the_redis_password(caplog):
    limiter = RedisLimiter(f"redis://:hunter2@127.0.0.1:{free_port()}/0")  # nothing listens there
    try:
        assert (await limiter.check([Limit("k", SLOW)])).allowed
    finally:
        await limiter.aclose()
    assert "Redis unavailable" in caplog.text
    assert "hunter2" not in caplog.text


@pytest.mark.redis
async def test_fails_open_when_redis_hangs(redis_server, redis_url):
    limiter = RedisLimiter(redis_url, timeout=0.1)
    try:
        await limiter.check([Limit("k", SLOW)])  # connect while Redis answers
        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        started = time.monotonic()
        check = await limiter.check([Limit("k", SLOW)])
        elapsed = time.monotonic() - started
        assert check.allowed
        assert 0.09 < elapsed < 0.5
        assert limiter.stats == {"redis_errors": 1, "fail_open": 1}
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
        await limiter.aclose()


# --- create_limiter -----------------------------------------------------------------------------------------------


async def test_create_limiter_without_redis_is_in_process():
    limiter = create_limiter(None)
    assert isinstance(limiter, MemoryLimiter)
    await limiter.aclose()


@pytest.mark.redis
async def test_create_limiter_with_redis(redis_url):
    limiter = create_limiter(redis_url, redis_timeout=0.5)
    try:
        assert isinstance(limiter, RedisLimiter)
        assert await limiter.ping()
    finally:
        await limiter.aclose()
