"""The drift detector: a binomial CUSUM per (key, signal) stream of hourly counts, against a baseline it learns.

Method (docs/drift.md has the why and the measured numbers). For each completed hour with `shown` impressions of
which `count` had the signal:

- Baseline: the stream's own hours in a trailing *reference window*: the UTC days overlapping the `reference_days`
  days that end `gap_hours` before the hour being judged (so a change is not absorbed into its own baseline before
  it is caught). Hours still in the gap when an alert opens (those from the CUSUM's estimated change point on) and
  hours while an alert is open never enter it. It is kept as day totals: a stream's state is under 2 KB of JSON.
- The baseline rate is taken at its cautious end: the Wilson bound (z = `baseline_margin`) on the side the signal
  must not move to (upper for a rising-is-worse signal). H0 is "the rate is no worse than that bound"; H1 is that
  bound shifted the wrong way by an odds ratio of `odds_ratio`.
- CUSUM on the hour's binomial log-likelihood ratio, divided by the reference's overdispersion `φ ≥ 1`
  (`dispersion`): `W = max(0, W + (x·log(p1/p0) + (n−x)·log((1−p1)/(1−p0))) / φ)`; an alert opens when
  `W ≥ log(arl_hours)`, once the reference holds at least `min_impressions` impressions over at least
  `min_reference_hours` hours. Each hour's `exp(evidence)` has mean at most 1 while the true rate is binomial and
  within the bound (Jensen, as `φ ≥ 1`), so the CUSUM is dominated by a Shiryaev–Roberts statistic whose mean at
  the alert time is at most the number of looks: the expected number of hourly looks between false alarms is at
  least `arl_hours`, however long anyone watches and whatever the traffic per hour (Pollak; Lorden).
- Resolution: while an alert is open its baseline rate `b` and design rate `p1` are frozen and a CUSUM in the
  opposite direction weighs each new hour's evidence for `b` against `p1`; the alert resolves when that evidence
  reaches the same threshold, `log(arl_hours)`. So "back within its baseline" means the data now favour the
  baseline rate over the worse rate the detector was built to catch as strongly as they favoured the worse rate
  when it opened (with `φ` frozen too); while the rate stays at or beyond `p1`, a spurious resolution is as rare
  as a false alarm.

The state is a plain msgspec Struct (`DriftState`), updated in place by `advance`; encode it with `dump_state` and
read it back with `load_state` between passes. Feeding hours in several passes gives exactly the state and alerts
of one pass over the same hours (the same arithmetic on the same numbers in the same order).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from typing import Literal

import msgspec
from msgspec import Struct

from gateway.analytics.intervals import wilson

HOUR = 3600
DAY = 24 * HOUR
# The direction in which each signal gets worse. `feedback_any` and `implicit_any` have none (more votes, or more
# signals of all kinds together, are neither good nor bad).
RISING: tuple[str, ...] = ("feedback_down", "regenerated", "rephrased", "abandoned", "edited")
FALLING: tuple[str, ...] = ("copied", "accepted", "feedback_up")
WATCHED: tuple[str, ...] = RISING + FALLING
METHOD = "binomial-cusum"


class DriftSettings(Struct, frozen=True, kw_only=True):
    """The detector's parameters. The defaults are what the gateway and `drift backtest` run (docs/drift.md)."""

    min_impressions: int = 2000
    min_reference_hours: int = 24  # hours with impressions: a day's cycle, and enough to estimate the dispersion
    arl_hours: int = 6000  # the proven floor on the mean number of hourly looks between false alarms (~36 weeks)
    reference_days: int = 28
    gap_hours: int = 24
    odds_ratio: float = 1.35  # the smallest change designed for: 10% → 13.0%, 2% → 2.7%
    baseline_margin: float = 1.0  # z of the Wilson bound taken as the baseline rate
    overdispersion: bool = True  # scale the evidence down by the reference's extra-binomial spread between hours

    def __post_init__(self) -> None:
        if min(self.min_impressions, self.min_reference_hours, self.reference_days) < 1 or self.gap_hours < 0:
            raise ValueError("drift settings: min_impressions, min_reference_hours, reference_days > 0, gap_hours >= 0")
        if self.arl_hours < 2:
            raise ValueError("drift settings: arl_hours >= 2")
        if self.odds_ratio <= 1 or self.baseline_margin < 0:
            raise ValueError("drift settings: odds_ratio > 1 and baseline_margin >= 0")

    @property
    def threshold(self) -> float:
        return math.log(self.arl_hours)


DEFAULTS = DriftSettings()


class Rate(Struct):
    shown: int
    count: int
    rate: float


class Alert(Struct, kw_only=True):
    """An alert as the detector opens or resolves it. Hours are unix seconds of the hour's start (UTC)."""

    key: str
    signal: str
    direction: Literal["worse"] = "worse"
    baseline: Rate  # the reference window the alert was judged against
    recent: Rate  # the hours since the CUSUM last stood at 0 (its estimate of the change point), alert hour included
    detected_at: int  # the hour whose counts opened the alert
    state: Literal["open", "resolved"] = "open"
    resolved_at: int | None = None  # the hour whose counts resolved it
    method: str = METHOD


class HourCount(Struct, frozen=True):
    """One completed hour of one stream: `shown` impressions, `count` of them with the signal."""

    hour: int
    key: str
    signal: str
    shown: int
    count: int


class _Open(Struct):
    alert: Alert
    baseline_rate: float  # b: frozen at detection
    design_rate: float  # p1: frozen at detection
    dispersion: float  # frozen at detection
    recovery: float = 0.0


class StreamState(Struct):
    # Hours too recent for the baseline, oldest first: (hour, shown, count).
    gap: list[tuple[int, int, int]] = msgspec.field(default_factory=list)
    # The reference window by UTC day, oldest first: (day, shown, count, sum of count² / shown, hours).
    days: list[tuple[int, int, int, float, int]] = msgspec.field(default_factory=list)
    reference_shown: int = 0
    reference_count: int = 0
    reference_hours: int = 0  # hours with impressions
    cusum: float = 0.0
    run_start: int | None = None  # first hour since the CUSUM last stood at 0
    run_shown: int = 0
    run_count: int = 0
    last_hour: int | None = None
    open: _Open | None = None


class DriftState(Struct):
    streams: dict[str, dict[str, StreamState]] = msgspec.field(default_factory=dict)  # key → signal → state


def dump_state(state: DriftState) -> bytes:
    return msgspec.json.encode(state)


def load_state(data: bytes | str) -> DriftState:
    return msgspec.json.decode(data, type=DriftState)


def _odds_shift(p: float, ratio: float) -> float:
    odds = p / (1 - p) * ratio
    return odds / (1 + odds)


def design(reference_shown: int, reference_count: int, signal: str,
           settings: DriftSettings = DEFAULTS) -> tuple[float, float] | None:
    """(p0, p1): the cautious baseline rate and the worse rate the CUSUM weighs it against; None if the baseline
    cannot be judged (too few impressions, or already at the end of [0, 1] it would move towards)."""
    if reference_shown < settings.min_impressions:
        return None
    lower, upper = wilson(reference_count, reference_shown, settings.baseline_margin)
    if signal in RISING:
        p0 = upper
        p1 = _odds_shift(p0, settings.odds_ratio) if p0 < 1 else 1.0
    else:
        p0 = lower
        p1 = _odds_shift(p0, 1 / settings.odds_ratio) if p0 > 0 else 0.0
    return None if p1 == p0 or not 0 < p0 < 1 else (p0, p1)


def log_likelihood_ratio(shown: int, count: int, p1: float, p0: float) -> float:
    """log P(count | shown, p1) / P(count | shown, p0) for a binomial count."""
    return count * math.log(p1 / p0) + (shown - count) * math.log((1 - p1) / (1 - p0))


def dispersion(stream: StreamState) -> float:
    """How much more the reference's hourly counts spread than binomial ones would: Pearson's X² over its hours
    divided by their degrees of freedom, and never below 1. Real traffic mixes users, topics and times of day, so
    hourly rates vary beyond binomial noise; the CUSUM divides its evidence by this (a quasi-likelihood)."""
    hours, shown, count = stream.reference_hours, stream.reference_shown, stream.reference_count
    if hours < 2 or count == 0 or count == shown:
        return 1.0
    rate = count / shown
    squares = sum(day[3] for day in stream.days)
    pearson = (squares - count * count / shown) / (rate * (1 - rate))
    return max(1.0, pearson / (hours - 1))


def _roll(stream: StreamState, hour: int, settings: DriftSettings) -> None:
    """Move hours that left the gap into their day's total, and drop days that left the reference window."""
    gap_start = hour - settings.gap_hours * HOUR
    while stream.gap and stream.gap[0][0] < gap_start:
        entry_hour, shown, count = stream.gap.pop(0)
        day, square = entry_hour - entry_hour % DAY, count * count / shown
        if stream.days and stream.days[-1][0] == day:
            _, day_shown, day_count, day_squares, day_hours = stream.days[-1]
            stream.days[-1] = (day, day_shown + shown, day_count + count, day_squares + square, day_hours + 1)
        else:
            stream.days.append((day, shown, count, square, 1))
        stream.reference_shown += shown
        stream.reference_count += count
        stream.reference_hours += 1
    reference_start = gap_start - settings.reference_days * DAY
    while stream.days and stream.days[0][0] + DAY <= reference_start:
        _, shown, count, _, hours = stream.days.pop(0)
        stream.reference_shown -= shown
        stream.reference_count -= count
        stream.reference_hours -= hours


def step(stream: StreamState, key: str, signal: str, hour: int, shown: int, count: int,
         settings: DriftSettings = DEFAULTS) -> Alert | None:
    """Judge one completed hour of one stream; return the alert it opened or resolved, if any."""
    if stream.last_hour is not None and hour <= stream.last_hour:
        raise ValueError(f"{key} {signal}: hour {hour} is not after the last hour judged ({stream.last_hour})")
    stream.last_hour = hour
    _roll(stream, hour, settings)
    threshold = settings.threshold

    if stream.open is not None:
        opened = stream.open
        opened.recovery = max(0.0, opened.recovery) + log_likelihood_ratio(
            shown, count, opened.baseline_rate, opened.design_rate) / opened.dispersion
        if opened.recovery < threshold:
            return None
        stream.open = None
        stream.cusum, stream.run_start, stream.run_shown, stream.run_count = 0.0, None, 0, 0
        return msgspec.structs.replace(opened.alert, state="resolved", resolved_at=hour)

    if shown == 0:  # no evidence, and nothing for the baseline
        return None
    stream.gap.append((hour, shown, count))
    if stream.reference_hours < settings.min_reference_hours:
        return None
    rates = design(stream.reference_shown, stream.reference_count, signal, settings)
    if rates is None:
        return None
    if stream.cusum <= 0:
        stream.run_start, stream.run_shown, stream.run_count = hour, 0, 0
    stream.run_shown += shown
    stream.run_count += count
    spread = dispersion(stream) if settings.overdispersion else 1.0
    evidence = log_likelihood_ratio(shown, count, rates[1], rates[0]) / spread
    stream.cusum = max(0.0, stream.cusum + evidence)
    if stream.cusum == 0:
        stream.run_start, stream.run_shown, stream.run_count = None, 0, 0
        return None
    if stream.cusum < threshold:
        return None

    baseline_rate = stream.reference_count / stream.reference_shown
    alert = Alert(key=key, signal=signal,
                  baseline=Rate(stream.reference_shown, stream.reference_count, baseline_rate),
                  recent=Rate(stream.run_shown, stream.run_count, stream.run_count / stream.run_shown),
                  detected_at=hour)
    stream.open = _Open(alert=alert, baseline_rate=baseline_rate, design_rate=rates[1], dispersion=spread)
    # The gap's hours from the estimated change point on are not baseline. (Older run hours are already in the day
    # totals; the CUSUM rarely needs longer than the gap, and a slow-building change moves those totals little.)
    run_start = stream.run_start
    stream.gap = [entry for entry in stream.gap if run_start is None or entry[0] < run_start]
    return alert


def advance(state: DriftState, counts: Iterable[HourCount], settings: DriftSettings = DEFAULTS) -> list[Alert]:
    """Feed completed hours (any order; each stream's hours must come after the hours it has already judged) and
    return the alerts opened or resolved, in hour order. `state` is updated in place. Signals with no direction
    (`feedback_any`, `implicit_any`) are ignored."""
    changes = []
    for item in sorted(counts, key=lambda c: c.hour):
        if item.signal not in WATCHED:
            continue
        if item.hour % HOUR:
            raise ValueError(f"hour {item.hour} is not the start of an hour")
        if not 0 <= item.count <= item.shown:
            raise ValueError(f"{item.key} {item.signal} at {item.hour}: need 0 <= count <= shown")
        stream = state.streams.setdefault(item.key, {}).setdefault(item.signal, StreamState())
        change = step(stream, item.key, item.signal, item.hour, item.shown, item.count, settings)
        if change is not None:
            changes.append(change)
    return changes


def iso_hour(hour: int) -> str:
    return dt.datetime.fromtimestamp(hour, dt.timezone.utc).strftime("%Y-%m-%dT%H:00:00Z")
