"""The /v1/stats numbers, defined once: impressions, signal counts, rates with Wilson intervals, outlier sessions.

Two entry points share one answer builder:

- `compute_stats(rows, query)` counts from the raw log (each stored event joined with its trace). It is the reference
  definition: slow, obviously right, and what rollups are tested against ("rollups equal a full recount").
- `build_answer(counts, query, flagged_sessions)` turns counts that are already aggregated per group (from rollups,
  or from `count_groups`) into the answer, so both paths share the rate, interval and shape code.

Definitions (issue 11; the route adds parsing and the wire form):

- An *impression* is a distinct (trace, session) pair with any event: `shown` or any other type. `shown` in the
  answer counts impressions.
- A signal's count is the number of impressions with at least one event of that type (repeats count once).
  `feedback_up` / `feedback_down` count impressions whose *current* vote is up (value 1) / down (value 0);
  `feedback_any` those with any vote. The current vote is the newest by client `ts`; on equal `ts` the later-stored
  row wins (the store's rule: `WHERE excluded.ts >= votes.ts`). `implicit_any` counts the impressions with at least
  one event of any `IMPLICIT_SIGNALS` type (one with several counts once; a vote is not one): with `feedback_any`,
  the explicit vs implicit coverage.
- `reasons` counts the reason codes of current down votes (an up vote's reason, or a down vote's reason that a newer
  vote replaced, is not counted; a down vote without a reason adds nothing).
- Groups come from the trace's `model`, `template`, `template_version`, and its `ts` (when the response was made)
  bucketed in UTC as `day` ("2026-11-30") or `hour` ("2026-11-30T05:00:00Z"). `from` (inclusive) and `to`
  (exclusive), in ms, filter on the trace's `ts`; `model=` and `template=` on the trace's fields.
- A session is *flagged* when, among the impressions in the time range (all models and templates), it has a current
  vote on at least `outlier_min_votes` of them and all those votes have the same value. Flagged sessions'
  impressions are left out of every count unless `include_flagged`; `flagged_sessions` reports how many there were
  either way.
- A group with `shown = 0` is left out; groups are ordered by key (missing values first).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Literal

import msgspec
from msgspec import Struct

from gateway.analytics.intervals import wilson

IMPLICIT_SIGNALS: tuple[str, ...] = ("copied", "edited", "regenerated", "rephrased", "abandoned", "accepted")
IMPLICIT_ANY = "implicit_any"
SIGNALS: tuple[str, ...] = ("feedback_up", "feedback_down", "feedback_any", *IMPLICIT_SIGNALS, IMPLICIT_ANY)
Dimension = Literal["model", "template", "template_version", "day", "hour"]
DIMENSIONS: tuple[str, ...] = ("model", "template", "template_version", "day", "hour")
OUTLIER_MIN_VOTES = 10

UP, DOWN = 1, 0
GroupKey = tuple[str | None, ...]  # values in `StatsQuery.group_by` order


class LogRow(Struct, frozen=True, kw_only=True):
    """One stored event joined with its trace. Times are ms since the epoch (client `ts` for the event)."""

    trace_id: str
    session_id: str
    type: str
    ts: int
    trace_ts: int
    value: int | None = None  # feedback only: 1 up, 0 down
    reason: str | None = None  # feedback only
    model: str | None = None
    template: str | None = None
    template_version: str | None = None


class StatsQuery(Struct, frozen=True, kw_only=True):
    group_by: tuple[Dimension, ...] = ()
    from_ms: int | None = None  # inclusive, on the trace's ts
    to_ms: int | None = None  # exclusive
    model: str | None = None
    template: str | None = None
    include_flagged: bool = False
    outlier_min_votes: int = OUTLIER_MIN_VOTES


class GroupCounts(Struct):
    """What a group's answer is built from: impressions, impressions per signal, reasons of current down votes."""

    shown: int = 0
    signals: dict[str, int] = msgspec.field(default_factory=dict)  # a missing signal counts 0
    reasons: dict[str, int] = msgspec.field(default_factory=dict)

    def add(self, other: GroupCounts, sign: int = 1) -> None:
        """Add `other`'s counts into these (a group is a sum of disjoint impressions, e.g. of hours); `sign=-1` takes
        them away (e.g. flagged sessions' impressions, counted with `count_groups` on their rows, from rollup sums)."""
        self.shown += sign * other.shown
        for name, n in other.signals.items():
            self.signals[name] = self.signals.get(name, 0) + sign * n
        for code, n in other.reasons.items():
            self.reasons[code] = self.reasons.get(code, 0) + sign * n


class SignalStats(Struct):
    count: int
    rate: float
    ci: tuple[float, float]


class GroupStats(Struct):
    key: dict[str, str | None]
    shown: int
    signals: dict[str, SignalStats]
    reasons: dict[str, int]


class StatsAnswer(Struct):
    groups: list[GroupStats]
    flagged_sessions: int
    from_ms: int | None = msgspec.field(default=None, name="from")
    to_ms: int | None = msgspec.field(default=None, name="to")


class _Impression:
    __slots__ = ("row", "types", "vote", "vote_ts")

    def __init__(self, row: LogRow) -> None:
        self.row = row  # the first row seen; the trace fields are the same on all of an impression's rows
        self.types: set[str] = set()
        self.vote: LogRow | None = None
        self.vote_ts = 0


def _in_range(trace_ts: int, query: StatsQuery) -> bool:
    return (query.from_ms is None or trace_ts >= query.from_ms) and (query.to_ms is None or trace_ts < query.to_ms)


def _impressions(rows: Iterable[LogRow], query: StatsQuery) -> dict[tuple[str, str], _Impression]:
    """Impressions whose trace is in the query's time range, with their event types and current vote."""
    found: dict[tuple[str, str], _Impression] = {}
    for row in rows:
        if not _in_range(row.trace_ts, query):
            continue
        impression = found.get((row.trace_id, row.session_id))
        if impression is None:
            impression = found[(row.trace_id, row.session_id)] = _Impression(row)
        impression.types.add(row.type)
        if row.type == "feedback" and (impression.vote is None or row.ts >= impression.vote_ts):
            impression.vote, impression.vote_ts = row, row.ts
    return found


def _flagged(impressions: Iterable[_Impression], min_votes: int) -> frozenset[str]:
    votes: dict[str, list[int]] = {}
    for impression in impressions:
        if impression.vote is not None:
            votes.setdefault(impression.row.session_id, []).append(impression.vote.value)
    return frozenset(s for s, values in votes.items() if len(values) >= min_votes and len(set(values)) == 1)


def flagged_session_ids(rows: Iterable[LogRow], query: StatsQuery) -> frozenset[str]:
    """The sessions the outlier rule flags in the query's time range (model and template filters do not apply)."""
    return _flagged(_impressions(rows, query).values(), query.outlier_min_votes)


def bucket(trace_ts_ms: int, dimension: Literal["day", "hour"]) -> str:
    """The UTC day ("2026-11-30") or hour ("2026-11-30T05:00:00Z") a trace's ts falls in."""
    when = dt.datetime.fromtimestamp(trace_ts_ms // 1000, dt.timezone.utc)
    return when.strftime("%Y-%m-%d" if dimension == "day" else "%Y-%m-%dT%H:00:00Z")


def group_key(row: LogRow, group_by: tuple[str, ...]) -> GroupKey:
    return tuple(bucket(row.trace_ts, d) if d in ("day", "hour") else getattr(row, d) for d in group_by)


def _impression_signals(impression: _Impression) -> list[str]:
    names = [t for t in IMPLICIT_SIGNALS if t in impression.types]
    if names:
        names.append(IMPLICIT_ANY)
    if impression.vote is not None:
        names.append("feedback_any")
        names.append("feedback_up" if impression.vote.value == UP else "feedback_down")
    return names


def count_groups(rows: Iterable[LogRow], query: StatsQuery) -> tuple[dict[GroupKey, GroupCounts], int]:
    """Counts per group from the raw log, and the number of flagged sessions."""
    impressions = _impressions(rows, query)
    flagged = _flagged(impressions.values(), query.outlier_min_votes)
    counts: dict[GroupKey, GroupCounts] = {}
    for (_trace, session), impression in impressions.items():
        row = impression.row
        if (query.model is not None and row.model != query.model) or (
                query.template is not None and row.template != query.template):
            continue
        if session in flagged and not query.include_flagged:
            continue
        group = counts.setdefault(group_key(row, query.group_by), GroupCounts())
        group.shown += 1
        for name in _impression_signals(impression):
            group.signals[name] = group.signals.get(name, 0) + 1
        vote = impression.vote
        if vote is not None and vote.value == DOWN and vote.reason is not None:
            group.reasons[vote.reason] = group.reasons.get(vote.reason, 0) + 1
    return counts, len(flagged)


def signal_stats(count: int, shown: int) -> SignalStats:
    return SignalStats(count=count, rate=count / shown, ci=wilson(count, shown))


def build_answer(counts: Mapping[GroupKey, GroupCounts], query: StatsQuery, flagged_sessions: int) -> StatsAnswer:
    """The /v1/stats answer from per-group counts keyed by values in `query.group_by` order. Reasons are ordered by
    count, most first (then by code); a reason counted 0 is left out."""
    groups = []
    for key in sorted(counts, key=lambda k: tuple((v is not None, v or "") for v in k)):
        group = counts[key]
        if group.shown <= 0:
            continue
        groups.append(GroupStats(
            key=dict(zip(query.group_by, key)),
            shown=group.shown,
            signals={name: signal_stats(group.signals.get(name, 0), group.shown) for name in SIGNALS},
            reasons=dict(sorted(((code, n) for code, n in group.reasons.items() if n > 0),
                                key=lambda item: (-item[1], item[0]))),
        ))
    return StatsAnswer(groups=groups, flagged_sessions=flagged_sessions, from_ms=query.from_ms, to_ms=query.to_ms)


def compute_stats(rows: Iterable[LogRow], query: StatsQuery) -> StatsAnswer:
    """The reference /v1/stats answer, counted from every event row (see the module docstring for the rules)."""
    counts, flagged = count_groups(rows, query)
    return build_answer(counts, query, flagged)
