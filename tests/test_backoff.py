"""gateway/backoff.py: the retry schedule, against hand counts and a simulation with known truth."""

from __future__ import annotations

import email.utils
import random

import pytest

from gateway.backoff import Backoff, retry_after_at

HOURS_72 = 72 * 3600.0
FORWARDING = Backoff()  # the delivery worker's: 1 s doubling to 600 s, dead after 72 h


def test_windows_double_from_base_up_to_the_cap():
    assert [FORWARDING.window(n) for n in range(1, 13)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]
    assert FORWARDING.window(10_000) == 600  # no overflow however long a row has failed
    assert Backoff(base=0.25, cap=5.0).window(3) == 1.0


@pytest.mark.parametrize("attempt, rand, expected", [(1, 0.0, 1000.0), (1, 0.5, 1000.5), (3, 0.5, 1002.0),
                                                     (4, 0.25, 1002.0), (12, 0.5, 1300.0)])
def test_full_jitter_hand_counts(attempt, rand, expected):
    assert FORWARDING.next_attempt(attempt, 1000.0, first_attempt_at=1000.0, rand=rand) == expected


def test_jitter_spans_the_whole_window_uniformly():
    rng = random.Random(7)
    delays = [FORWARDING.next_attempt(5, 0.0, first_attempt_at=0.0, rand=rng.random()) for _ in range(20_000)]
    assert all(0.0 <= d < 16.0 for d in delays)
    assert min(delays) < 0.05 and max(delays) > 15.95  # full jitter: from no wait to the whole window
    assert sum(delays) / len(delays) == pytest.approx(8.0, abs=0.15)  # uniform on [0, 16): mean 8
    assert sum(d < 8.0 for d in delays) / len(delays) == pytest.approx(0.5, abs=0.02)


def test_retry_after_is_a_floor_not_a_replacement():
    later = FORWARDING.next_attempt(1, 100.0, first_attempt_at=100.0, rand=0.5, retry_after_at=160.0)
    assert later == 160.0  # the server asked for a minute: not before
    sooner = FORWARDING.next_attempt(10, 100.0, first_attempt_at=100.0, rand=0.5, retry_after_at=101.0)
    assert sooner == 100.0 + 256.0  # our own backoff is longer: kept


def test_dead_once_the_next_try_would_pass_72_hours():
    near_end = HOURS_72 - 100.0
    assert FORWARDING.next_attempt(20, near_end, first_attempt_at=0.0, rand=0.1) == near_end + 60.0
    assert FORWARDING.next_attempt(20, near_end, first_attempt_at=0.0, rand=0.2) is None  # +120 s: past 72 h
    assert FORWARDING.next_attempt(1, 10.0, first_attempt_at=0.0, rand=0.0, retry_after_at=HOURS_72 + 1) is None
    assert FORWARDING.next_attempt(1, 10.0, first_attempt_at=0.0, rand=0.0, retry_after_at=HOURS_72) == HOURS_72


def test_a_destination_down_for_good_is_tried_until_72_hours_then_dead():
    """Simulate a row that fails every time: the tries stay inside 72 h, the gaps follow the windows, and the last
    try is within one capped window of the deadline."""
    rng = random.Random(13)
    tries, now, attempt = [0.0], 0.0, 0
    while True:
        attempt += 1
        nxt = FORWARDING.next_attempt(attempt, now, first_attempt_at=0.0, rand=rng.random())
        if nxt is None:
            break
        assert 0.0 <= nxt - now < FORWARDING.window(attempt)
        tries.append(nxt)
        now = nxt
    assert tries[-1] <= HOURS_72 and tries[-1] > HOURS_72 - 600.0
    # After the first ten tries (~1023 s), gaps average half the cap: about 72 h / 300 s tries in all.
    assert 800 < len(tries) < 900


def test_retry_after_header_forms():
    assert retry_after_at("120", 1000.0) == 1120.0
    assert retry_after_at(" 0 ", 1000.0) == 1000.0
    date = email.utils.formatdate(2000.0, usegmt=True)
    assert retry_after_at(date, 1000.0) == 2000.0
    assert retry_after_at(email.utils.formatdate(10.0, usegmt=True), 1000.0) == 1000.0  # a past date: now
    for bad in (None, "", "soon", "-5", "1.5", "Wed, 21 Oct 2015 07:28:00 -0000"):
        assert retry_after_at(bad, 1000.0) is None, bad


@pytest.mark.parametrize("attempt, rand", [(0, 0.5), (1, 1.0), (1, -0.1)])
def test_bad_arguments_are_refused(attempt, rand):
    with pytest.raises(ValueError):
        FORWARDING.next_attempt(attempt, 0.0, first_attempt_at=0.0, rand=rand)
