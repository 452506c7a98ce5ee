"""The drift detector: its targets on a simulation with known truth, and its rules on hand-made streams."""

from __future__ import annotations

import random

import msgspec
import pytest

from bench.drift_sim import detection_delay, false_alarms, median_or_none, poisson_interval
from gateway.analytics.drift import (
    DEFAULTS, HOUR, DriftSettings, DriftState, HourCount, StreamState, advance, design, dump_state, load_state, step)


@pytest.mark.parametrize("per_hour", [100, 1000])
def test_false_alarms_at_most_one_in_100_weeks(per_hour):
    # 6,000 weeks of a constant 10% stream watched from empty states, on seeds the defaults were not tuned on: the
    # whole 95% interval of the false-alarm rate must lie under 1 per 100 weeks.
    streams, weeks = 600, 10
    alarms = sum(false_alarms(2_000_000 + i, per_hour, weeks) for i in range(streams))
    _, upper = poisson_interval(alarms, streams * weeks / 100)
    assert upper <= 1.0, f"{alarms} false alarms in {streams * weeks} weeks: up to {upper:.2f} per 100 weeks"


@pytest.mark.parametrize("per_hour", [100, 1000])
def test_a_step_from_10_to_13_percent_alerts_within_3000_impressions(per_hour):
    results = [detection_delay(3_000_000 + i, per_hour) for i in range(20)]
    median = median_or_none([delay for delay, _oracle, _early in results])
    assert median is not None and median <= 3000, [r[0] for r in results]


def feed(counts, settings=DEFAULTS, key="k", signal="feedback_down", state=None):
    """Hour i gets counts[i] = (shown, count); returns (state, alerts)."""
    state = DriftState() if state is None else state
    alerts = advance(state, [HourCount(i * HOUR, key, signal, n, x) for i, (n, x) in enumerate(counts)], settings)
    return state, alerts


@pytest.mark.parametrize("settings", [DriftSettings(min_impressions=2000, min_reference_hours=1),
                                      DriftSettings(min_impressions=100, min_reference_hours=20)])
def test_nothing_alerts_before_the_reference_holds_min_impressions_and_hours(settings):
    # Hours 0-19 (2,000 impressions at 10%) are the whole reference at hour 44 (gap: 24 hours); every later hour is
    # all thumbs-down, so the first hour that may alert does.
    counts = [(100, 10)] * 20 + [(100, 100)] * 40
    _, alerts = feed(counts, settings)
    assert [a.detected_at for a in alerts] == [44 * HOUR]
    assert alerts[0].baseline.shown == 2000 and alerts[0].baseline.rate == pytest.approx(0.10)
    for stricter in (msgspec.structs.replace(settings, min_impressions=2001),
                     msgspec.structs.replace(settings, min_reference_hours=21)):
        _, alerts = feed(counts[:45], stricter)
        assert alerts == []


def test_only_the_worse_direction_alerts():
    before, after = [(100, 50)] * 720, [(100, 20)] * 48
    _, alerts = feed(before + after, signal="copied")  # copied falling is worse
    assert [(a.signal, a.direction, a.state) for a in alerts] == [("copied", "worse", "open")]
    assert alerts[0].recent.rate == pytest.approx(0.20)
    _, alerts = feed(before + after, signal="feedback_down")  # thumbs-down falling is better
    assert alerts == []
    _, alerts = feed([(100, 10)] * 720 + [(100, 40)] * 48, signal="feedback_any")  # no direction: not watched
    assert alerts == []


def test_an_alert_resolves_when_the_rate_is_back_at_baseline_and_not_before():
    baseline, worse = [(100, 10)] * 720, [(100, 20)] * 500
    state, alerts = feed(baseline + worse)
    assert [a.state for a in alerts] == ["open"]  # 500 hours at the worse rate: still open
    opened = alerts[0]
    assert opened.baseline.rate == pytest.approx(0.10) and opened.recent.rate == pytest.approx(0.20)
    more = advance(state, [HourCount((1220 + i) * HOUR, "k", "feedback_down", 100, 10) for i in range(48)])
    assert len(more) == 1 and more[0].state == "resolved"
    assert more[0].detected_at == opened.detected_at and 1220 * HOUR < more[0].resolved_at < 1240 * HOUR
    # Resolved, detection starts over: a new rise opens a new alert.
    fresh = advance(state, [HourCount((1268 + i) * HOUR, "k", "feedback_down", 100, 25) for i in range(48)])
    assert [a.state for a in fresh] == ["open"]


def test_hours_after_the_change_point_never_become_baseline():
    state, alerts = feed([(100, 10)] * 720 + [(100, 20)] * 40)
    stream = state.streams["k"]["feedback_down"]
    assert alerts and alerts[0].recent.shown < 24 * 100  # caught while the change is still in the gap
    assert all(hour < 720 * HOUR for hour, _, _ in stream.gap)
    assert stream.reference_count * 10 == stream.reference_shown == 100 * stream.reference_hours  # all at 10%
    # Later hours (the alert is open) do not enter it either.
    advance(state, [HourCount((760 + i) * HOUR, "k", "feedback_down", 100, 20) for i in range(100)])
    assert all(hour < 720 * HOUR for hour, _, _ in stream.gap) and stream.reference_count * 10 == stream.reference_shown


def random_stream(seed, hours=1500, change=900):
    rng = random.Random(seed)
    return [(n, sum(rng.random() < (0.1 if h < change else 0.14) for _ in range(n)))
            for h in range(hours) for n in [rng.randint(0, 150)]]


def test_incremental_passes_equal_one_replay_and_state_round_trips():
    counts = random_stream(7)
    rows = [HourCount(i * HOUR, "k", s, n, x) for i, (n, x) in enumerate(counts) for s in ("feedback_down", "copied")]
    replay = DriftState()
    replay_alerts = advance(replay, rows)
    assert replay_alerts, "the stream's change should open an alert"

    incremental, alerts = DriftState(), []
    for start in range(0, len(rows), 97):
        incremental = load_state(dump_state(incremental))  # persisted between passes
        alerts += advance(incremental, rows[start:start + 97])
    assert alerts == replay_alerts
    assert dump_state(incremental) == dump_state(replay)
    assert load_state(dump_state(replay)) == replay


def test_hours_must_move_forward_and_be_whole():
    state, _ = feed([(100, 10)] * 3)
    with pytest.raises(ValueError, match="not after the last hour"):
        advance(state, [HourCount(2 * HOUR, "k", "feedback_down", 100, 10)])
    with pytest.raises(ValueError, match="start of an hour"):
        advance(state, [HourCount(10 * HOUR + 1, "k", "feedback_down", 100, 10)])
    with pytest.raises(ValueError, match="count <= shown"):
        advance(state, [HourCount(10 * HOUR, "k", "feedback_down", 10, 11)])


def test_design_rates():
    # The cautious baseline (Wilson upper bound, z=1) and the worse rate an odds ratio of 1.35 away.
    p0, p1 = design(10_000, 1000, "feedback_down")
    assert p0 == pytest.approx((0.1 + 1 / 20_000 + (0.09 / 10_000 + 1 / 4e8) ** 0.5) / 1.0001, abs=1e-12)
    assert p1 / (1 - p1) == pytest.approx(1.35 * p0 / (1 - p0))
    low, fall = design(10_000, 1000, "copied")
    assert low < 0.1 and fall < low
    assert design(1999, 200, "feedback_down") is None  # under min_impressions
    assert design(10_000, 0, "copied") is None  # a rate of 0 cannot fall
    assert design(10_000, 0, "feedback_down") is not None  # but can rise


def test_a_zero_impression_hour_is_no_evidence():
    stream = StreamState()
    for h in range(800):
        step(stream, "k", "regenerated", h * HOUR, 100, 10)
    before = stream.cusum
    assert step(stream, "k", "regenerated", 800 * HOUR, 0, 0) is None and stream.cusum == before
