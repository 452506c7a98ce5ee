"""Wilson intervals and the /v1/stats reference counts, against numbers counted by hand."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from gateway.analytics.intervals import wilson
from gateway.analytics.rates import (
    SIGNALS, GroupCounts, LogRow, StatsQuery, build_answer, compute_stats, count_groups, flagged_session_ids)


# Roots of (p̂ − p)² = z² p (1 − p) / n, solved by hand with the quadratic formula (z = 1.959964).
@pytest.mark.parametrize("count, n, lower, upper", [
    (0, 10, 0.0, 0.277532803),
    (10, 10, 0.722467197, 1.0),
    (20, 1200, 0.010814682, 0.025603285),
    (1, 2, 0.094531205, 0.905468795),
    (5, 100, 0.021543679, 0.111750470),
    (0, 1, 0.0, 0.793450688),
])
def test_wilson_matches_hand_computed_bounds(count, n, lower, upper):
    assert wilson(count, n) == pytest.approx((lower, upper), abs=1e-6)


@pytest.mark.parametrize("count, n", [(0, 0), (-1, 5), (6, 5)])
def test_wilson_refuses_impossible_counts(count, n):
    with pytest.raises(ValueError):
        wilson(count, n)


DAY1 = int(dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
HOUR_MS, DAY_MS = 3_600_000, 86_400_000
TRACES = {  # trace → (model, template, template_version, trace ts)
    "t1": ("a", "x", "v1", DAY1 + 10 * HOUR_MS + 15 * 60_000),
    "t2": ("a", "y", "v1", DAY1 + 11 * HOUR_MS + 30 * 60_000),
    "t3": ("b", "x", "v2", DAY1 + DAY_MS + 9 * HOUR_MS),
    "t4": ("b", "x", "v2", DAY1 + 2 * DAY_MS),  # exactly at `to` below: outside the range
    "t5": (None, "x", None, DAY1 + 12 * HOUR_MS),
    **{f"f{i}": ("b", "x", "v2", DAY1 + DAY_MS + i * HOUR_MS) for i in range(10)},
}


def ev(trace, session, kind, ts=0, value=None, reason=None):
    model, template, version, trace_ts = TRACES[trace]
    return LogRow(trace_id=trace, session_id=session, type=kind, ts=ts, trace_ts=trace_ts, value=value,
                  reason=reason, model=model, template=template, template_version=version)


ROWS = [
    ev("t1", "s1", "shown"), ev("t1", "s1", "copied"), ev("t1", "s1", "copied"),
    ev("t1", "s1", "feedback", 100, 1), ev("t1", "s1", "feedback", 200, 0, "too_long"),  # changed to down
    # s2's older up vote arrives after its newer down vote: down stays current.
    ev("t1", "s2", "feedback", 300, 0, "wrong_information"), ev("t1", "s2", "feedback", 250, 1),
    ev("t1", "s2", "regenerated"),
    ev("t1", "s3", "shown"),
    ev("t2", "s1", "shown"), ev("t2", "s1", "feedback", 100, 1), ev("t2", "s1", "edited"),
    ev("t2", "s2", "feedback", 100, 0, "too_long"), ev("t2", "s2", "feedback", 100, 0, "other"),  # same ts: later wins
    ev("t3", "s1", "rephrased"), ev("t3", "s1", "abandoned"),  # acted on without a shown event: an impression
    ev("t3", "s3", "shown"), ev("t3", "s3", "accepted"), ev("t3", "s3", "feedback", 5, 1),
    ev("t4", "s1", "shown"), ev("t4", "s1", "copied"),
    ev("t5", "s2", "shown"),
    ev("f0", "bot", "feedback", 1, 1),  # the bot's one up vote is replaced: all its current votes are down
    *[e for i in range(10) for e in (ev(f"f{i}", "bot", "shown"), ev(f"f{i}", "bot", "feedback", 2, 0, "other"))],
    *[ev(f"f{i}", "fan", "feedback", 1, 1) for i in range(9)],  # 9 identical votes: not flagged
    *[ev(f"f{i}", "mixed", "feedback", 1, 1) for i in range(9)], ev("f9", "mixed", "feedback", 1, 0),  # 10, mixed
]


def counts(answer, index=0):
    group = answer.groups[index]
    return group.shown, {name: s.count for name, s in group.signals.items() if s.count}, group.reasons


def test_hand_count_without_flagged_sessions():
    answer = compute_stats(ROWS, StatsQuery())
    assert answer.flagged_sessions == 1 and flagged_session_ids(ROWS, StatsQuery()) == {"bot"}
    assert [g.key for g in answer.groups] == [{}]
    # implicit_any: t1·s1, t1·s2, t2·s1, t3·s1 (two signals, once), t3·s3, t4·s1; t2·s2 only voted
    assert counts(answer) == (28, {"feedback_up": 20, "feedback_down": 4, "feedback_any": 24, "copied": 2,
                                   "edited": 1, "regenerated": 1, "rephrased": 1, "abandoned": 1, "accepted": 1,
                                   "implicit_any": 6},
                              {"other": 1, "too_long": 1, "wrong_information": 1})
    stats = answer.groups[0].signals
    assert list(stats) == list(SIGNALS)
    assert stats["feedback_up"].rate == 20 / 28 and stats["feedback_up"].ci == wilson(20, 28)
    assert stats["edited"].ci == pytest.approx((0.006332520, 0.177121979), abs=1e-6)  # 1 of 28, by hand


def test_hand_count_with_flagged_sessions():
    answer = compute_stats(ROWS, StatsQuery(include_flagged=True))
    assert answer.flagged_sessions == 1
    shown, signals, reasons = counts(answer)
    assert (shown, signals["feedback_down"], signals["feedback_any"], signals["implicit_any"]) == (38, 14, 34, 6)
    assert list(reasons.items()) == [("other", 11), ("too_long", 1), ("wrong_information", 1)]  # most first


def test_implicit_any_counts_an_impression_with_any_implicit_signal_once():
    rows = [
        ev("t1", "s1", "copied"), ev("t1", "s1", "edited"), ev("t1", "s1", "copied"),  # two kinds and a repeat: 1
        ev("t1", "s2", "feedback", 1, 1),  # only a vote: 0
        ev("t1", "s3", "shown"),  # only shown: 0
        ev("t2", "s1", "shown"), ev("t2", "s1", "abandoned"), ev("t2", "s1", "feedback", 1, 0),  # 1
    ]
    answer = compute_stats(rows, StatsQuery())
    assert counts(answer) == (4, {"copied": 1, "edited": 1, "abandoned": 1, "implicit_any": 2, "feedback_up": 1,
                                  "feedback_down": 1, "feedback_any": 2}, {})
    implicit = answer.groups[0].signals["implicit_any"]
    assert implicit.rate == 0.5 and implicit.ci == pytest.approx((0.150038988, 0.849961012), abs=1e-6)  # by hand
    by_template = compute_stats(rows, StatsQuery(group_by=("template",)))
    assert [(g.key, g.signals["implicit_any"].count) for g in by_template.groups] == [
        ({"template": "x"}, 1), ({"template": "y"}, 1)]


def test_groups_by_trace_fields_and_days():
    answer = compute_stats(ROWS, StatsQuery(group_by=("model",)))
    assert [(g.key, g.shown) for g in answer.groups] == [({"model": None}, 1), ({"model": "a"}, 5),
                                                          ({"model": "b"}, 22)]
    a, b = answer.groups[1], answer.groups[2]
    assert (a.signals["feedback_up"].count, a.signals["feedback_down"].count, a.signals["copied"].count) == (1, 3, 1)
    assert (b.signals["feedback_up"].count, b.signals["feedback_down"].count, b.signals["accepted"].count) == (19, 1, 1)
    assert b.reasons == {}  # mixed's down vote has no reason
    by_day = compute_stats(ROWS, StatsQuery(group_by=("day",)))
    assert [(g.key["day"], g.shown) for g in by_day.groups] == [("2026-11-01", 6), ("2026-11-02", 21),
                                                                  ("2026-11-03", 1)]
    by_hour = compute_stats(ROWS, StatsQuery(group_by=("model", "hour"), model="a"))
    assert [(g.key, g.shown) for g in by_hour.groups] == [
        ({"model": "a", "hour": "2026-11-01T10:00:00Z"}, 3), ({"model": "a", "hour": "2026-11-01T11:00:00Z"}, 2)]
    templates = compute_stats(ROWS, StatsQuery(group_by=("template", "template_version"), template="x"))
    assert [(g.key, g.shown) for g in templates.groups] == [
        ({"template": "x", "template_version": None}, 1), ({"template": "x", "template_version": "v1"}, 3),
        ({"template": "x", "template_version": "v2"}, 22)]


def test_from_is_inclusive_to_exclusive_on_the_trace_ts():
    day2, day3 = DAY1 + DAY_MS, DAY1 + 2 * DAY_MS
    answer = compute_stats(ROWS, StatsQuery(from_ms=day2, to_ms=day3))
    assert (answer.from_ms, answer.to_ms, answer.flagged_sessions) == (day2, day3, 1)
    shown, signals, _ = counts(answer)  # t3 (2) + fan (9) + mixed (10); t4 sits exactly at `to`
    assert (shown, signals["feedback_up"], signals["feedback_down"]) == (21, 19, 1)
    assert msgspec.json.decode(msgspec.json.encode(answer))["from"] == day2


def test_sessions_are_flagged_on_their_votes_in_the_range_only():
    # From 01:00 on day 2 the bot has 9 votes left: no longer flagged, so its impressions count.
    answer = compute_stats(ROWS, StatsQuery(from_ms=DAY1 + DAY_MS + HOUR_MS))
    assert answer.flagged_sessions == 0
    assert counts(answer)[0] == 2 + 1 + 9 + 8 + 9  # t3, t4, bot, fan, mixed
    assert compute_stats(ROWS, StatsQuery(outlier_min_votes=9)).flagged_sessions == 2  # bot and fan


def test_an_empty_range_has_no_groups():
    answer = compute_stats(ROWS, StatsQuery(from_ms=0, to_ms=1))
    assert answer.groups == [] and answer.flagged_sessions == 0


def test_answer_from_hourly_counts_equals_the_reference():
    # As the rollup path will: counts per (model, template, version, hour), summed into the groups asked for.
    for include_flagged in (False, True):
        hourly, flagged = count_groups(ROWS, StatsQuery(group_by=("model", "template", "template_version", "hour"),
                                                        include_flagged=include_flagged))
        query = StatsQuery(group_by=("model", "day"), include_flagged=include_flagged)
        summed: dict[tuple, GroupCounts] = {}
        for (model, _template, _version, hour), group in hourly.items():
            summed.setdefault((model, hour[:10]), GroupCounts()).add(group)
        summed[("z", "2026-12-01")] = GroupCounts()  # an empty group (shown 0) is left out
        assert build_answer(summed, query, flagged) == compute_stats(ROWS, query)


def test_taking_flagged_sessions_out_of_sums_that_include_them():
    query = StatsQuery(group_by=("model",))
    everyone, flagged = count_groups(ROWS, msgspec.structs.replace(query, include_flagged=True))
    bot_rows = [row for row in ROWS if row.session_id in flagged_session_ids(ROWS, query)]
    for key, group in count_groups(bot_rows, msgspec.structs.replace(query, include_flagged=True))[0].items():
        everyone[key].add(group, sign=-1)
    assert build_answer(everyone, query, flagged) == compute_stats(ROWS, query)
