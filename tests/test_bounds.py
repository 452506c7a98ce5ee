import json
import random

import msgspec
import pytest

from gateway.bounds import (
    INT64_MAX, INT64_MIN, MAX_BODY_DEPTH, TS_FUTURE_MS, TS_PAST_MS, ClockWindow, check_json, nesting_exceeds,
)


def depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


@pytest.mark.parametrize("body, limit, exceeds", [
    (b"{}", 1, False),
    (b"[[]]", 1, True),
    (b"[[]]", 2, False),
    (b"[" * 1000 + b"]" * 1000, 32, True),
    (b"[" * 32 + b"]" * 32, 32, False),
    (b"[" * 33 + b"]" * 33, 32, True),
    (b'{"a":' * 33 + b"1" + b"}" * 33, 32, True),
    (b"[" * 100_000, 32, True),  # truncated: malformed either way
    (b"[" * 40 + b"}" * 40, 32, True),  # mismatched
    (b'["' + b"[" * 1000 + b'"]', 32, False),  # brackets inside a string do not nest
    (b'["\\"' + b"[" * 1000 + b'"]', 32, False),  # nor after an escaped quote
    (b'["\\\\", ' + b"[" * 40 + b"]" * 40 + b"]", 32, True),  # an escaped backslash ends no string early
    (b'{"' + b'\\"' * 50 + b'": [' + b"[]," * 100 + b"[]]}", 32, False),
    (b"[]" * 10_000, 32, False),
])
def test_nesting_exceeds(body, limit, exceeds):
    assert nesting_exceeds(body, limit) is exceeds


def random_json(rng: random.Random, depth_left: int):
    kind = rng.random()
    if depth_left == 0 or kind < 0.3:
        return rng.choice([1, -2.5, None, True, "", "[", "]{", '"', "\\", '\\"[', "x" * rng.randrange(5), "é[]"])
    children = [random_json(rng, depth_left - 1) for _ in range(rng.randrange(4))]
    if kind < 0.65:
        return children
    return {rng.choice(["a", "[", "}{", '"q"', "\\"]) + str(i): child for i, child in enumerate(children)}


def test_nesting_exceeds_agrees_with_a_parser_on_random_json():
    rng = random.Random(9)
    for _ in range(3000):
        value = random_json(rng, rng.randrange(12))
        body = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode()
        for limit in (0, 1, 3, 5, 8):
            assert nesting_exceeds(body, limit) is (depth(value) > limit), body


def test_msgspec_needs_the_depth_check():
    # What the pre-check prevents: msgspec recurses, and raises RecursionError (not DecodeError) on deep input.
    with pytest.raises(RecursionError):
        msgspec.json.decode(b"[" * 5000 + b"]" * 5000)
    assert nesting_exceeds(b"[" * 5000 + b"]" * 5000, MAX_BODY_DEPTH)


def nested(levels: int):
    value: object = 1
    for _ in range(levels - 1):
        value = {"a": value}
    return {"top": value}


@pytest.mark.parametrize("value, problem", [
    ({}, None),
    ({"a": 1, "b": [1, 2, {"c": "d"}], "e": None, "f": True, "g": 1.5}, None),
    (nested(8), None),
    (nested(9), "nested deeper than 8 levels"),
    ({"a": [[[[[[[[1]]]]]]]]}, "nested deeper than 8 levels"),
    ({"a": [[[[[[[1]]]]]]]}, None),
    ({"n": INT64_MAX, "m": INT64_MIN}, None),
    ({"n": INT64_MAX + 1}, "an integer is outside the signed 64-bit range"),
    ({"n": [INT64_MIN - 1]}, "an integer is outside the signed 64-bit range"),
    ({"n": 10**5000}, "an integer is outside the signed 64-bit range"),
    ({"x": float("inf")}, "numbers must be finite"),
    ({"x": float("nan")}, "numbers must be finite"),
    ({"x": "y" * 16_000}, None),
    ({"x": "y" * 16_400}, "16408 bytes encoded; at most 16384"),
    ({"x": "\u00e9" * 8_200}, "16408 bytes encoded; at most 16384"),  # bytes, not characters
])
def test_check_json(value, problem):
    assert check_json(value) == problem


def test_check_json_limits_are_parameters():
    assert check_json([[1]], max_depth=1) == "nested deeper than 1 levels"
    assert check_json("abc", max_bytes=4) == "5 bytes encoded; at most 4"


NOW = 1_764_460_800_000  # 2025-11-30T00:00:00Z


@pytest.mark.parametrize("client, within", [
    (NOW, True),
    (NOW - TS_PAST_MS, True),
    (NOW - TS_PAST_MS - 1, False),
    (NOW + TS_FUTURE_MS, True),
    (NOW + TS_FUTURE_MS + 1, False),
    (4_102_444_799_999, False),  # 2099
    (0, False),
])
def test_ts_window(client, within):
    assert ClockWindow.at(NOW).event_time(client) == (client if within else NOW)
    assert ClockWindow.at(NOW).event_time(float(client)) == (client if within else NOW)


def test_window_is_seven_days_back_five_minutes_ahead():
    assert (TS_PAST_MS, TS_FUTURE_MS) == (7 * 24 * 3600 * 1000, 5 * 60 * 1000)


def test_a_vote_from_the_future_cannot_lock_the_order():
    # A vote dated 2100 received now is ordered now, so a real vote a second later is newer.
    locked = ClockWindow.at(NOW).event_time(4_102_444_799_999)
    later = ClockWindow.at(NOW + 1000).event_time(NOW + 1000)
    assert later > locked
