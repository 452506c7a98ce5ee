"""Rollups: the counts `/v1/stats` and the drift detector read, folded in from the event log behind a watermark.

The definitions are `gateway.analytics.rates`' (an impression is a distinct (trace, session); a signal counts once per
impression; votes count as the impression's current vote; reasons follow the current down vote). Tables:

- `impressions`: one row per (trace, session) with an event: which implicit signals it has (a bitmask over
  `IMPLICIT_SIGNALS`), its current vote, vote time and reason, and, copied from its trace, the project, the trace's
  `ts` and its group (so the edge of a range, the outlier rule and a re-logged trace never need the event log).
- `rollup_groups`: (project, model, template, template_version) → a small id.
- `rollup_hours`: (group, hour of the trace's `ts`) → impressions (`shown`) and one column per signal (`implicit_any`:
  the impressions whose bitmask is not 0, so a fold adds one when an impression's first implicit signal arrives).
- `rollup_reasons`: (group, hour, reason) → current down votes with that reason.
- the `meta` row `rollups_folded`: the last event `seq` folded in, written in the same transaction as the rollups.

The commits that store events do not touch the rollups (acknowledging an event costs nothing here). A fold is two steps:
`plan` reads, in one query, the impressions the events after the watermark touch (their signals summed in SQL), the
current vote of those with a vote among them (from `votes`), their stored state or else their trace, and works out every
write; `apply` makes them (one batched statement per table) and moves the watermark, if what the plan read still holds
(the watermark where it began, and no `retrace` since: the `rollups_epoch` meta row). The folder process plans on a read
connection of its own and the writer applies between two commits (`gateway/store/folder.py`); `catch_up` does both at
once, under the write lock. Every read here (`Stats`) first folds in what is left, planning the bulk of it on the
read connection and the rest in a `catch_up`, so an answer counts every event acknowledged before it was asked for.
Each plan touches `PLAN_ROWS` impressions at most (`plan_next`). An impression whose events change nothing (a repeated
`copied`) writes nothing. `retrace` moves a trace's folded impressions when the trace is re-logged with another model,
template, version or `ts` (events not folded yet are folded with the trace as it is then). Both keep this invariant,
which tests/test_rollups.py checks against `rates.compute_stats` over the log: the rollups are the sums of the
impressions' contributions, and the impressions are those of the events up to the watermark, except that a vote may be
ahead of it (a fold takes an impression's vote as `votes` has it then, which may already hold a newer vote committed
after the fold's last event; folding that event later changes nothing). A read's catch-up ends with one up to the last
event under the write lock, so no read sees the difference.

`stats` answers from whole hours of `rollup_hours` and counts the partial hours at either end of a range from
`impressions`; flagged sessions (`rates` docstring) are found among the range's voted impressions and, unless asked
for, their impressions (few) are subtracted.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any

import msgspec

from gateway.analytics.drift import HOUR
from gateway.analytics.rates import (
    DOWN, IMPLICIT_ANY, IMPLICIT_SIGNALS, SIGNALS, UP, GroupCounts, GroupKey, LogRow, StatsAnswer, StatsQuery, bucket,
    build_answer, count_groups,
)

HOUR_MS = HOUR * 1000
DAY = 24 * HOUR
BIT = {name: 1 << i for i, name in enumerate(IMPLICIT_SIGNALS)}
_COLUMNS = ("shown", *SIGNALS)  # rollup_hours' counters, in this order everywhere below
_SHOWN, _UP, _DOWN, _ANY = 0, 1 + SIGNALS.index("feedback_up"), 1 + SIGNALS.index("feedback_down"), \
    1 + SIGNALS.index("feedback_any")
_IMPLICIT = [(BIT[name], 1 + SIGNALS.index(name)) for name in IMPLICIT_SIGNALS]
_IMPLICIT_ANY = 1 + SIGNALS.index(IMPLICIT_ANY)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS rollup_groups (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    model TEXT, template TEXT, template_version TEXT,
    key TEXT NOT NULL UNIQUE  -- JSON [project_id, model, template, template_version]: null stays apart from ""
);
CREATE INDEX IF NOT EXISTS rollup_groups_by_project ON rollup_groups (project_id);
CREATE TABLE IF NOT EXISTS impressions (
    trace INTEGER NOT NULL REFERENCES traces (row),
    session_id TEXT NOT NULL,
    project_id INTEGER NOT NULL,
    trace_ts INTEGER NOT NULL,
    grp INTEGER NOT NULL REFERENCES rollup_groups (id),
    signals INTEGER NOT NULL,  -- bit i: IMPLICIT_SIGNALS[i] (gateway/analytics/rates.py)
    vote INTEGER, vote_ts INTEGER, reason TEXT,
    PRIMARY KEY (trace, session_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS impressions_by_time ON impressions (project_id, trace_ts);
CREATE INDEX IF NOT EXISTS impressions_by_session ON impressions (session_id);
CREATE INDEX IF NOT EXISTS impressions_votes ON impressions (project_id, trace_ts, session_id, vote)
    WHERE vote IS NOT NULL;
CREATE TABLE IF NOT EXISTS rollup_hours (
    grp INTEGER NOT NULL REFERENCES rollup_groups (id),
    hour INTEGER NOT NULL,  -- unix seconds of the start of the trace's hour (UTC)
    {", ".join(f"{c} INTEGER NOT NULL" for c in _COLUMNS)},
    PRIMARY KEY (grp, hour)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_reasons (
    grp INTEGER NOT NULL REFERENCES rollup_groups (id),
    hour INTEGER NOT NULL,
    reason TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (grp, hour, reason)
) WITHOUT ROWID;
INSERT INTO meta (name, value) VALUES ('rollups_folded', '0') ON CONFLICT DO NOTHING;
"""

_encode = msgspec.json.Encoder().encode


class _Impression:
    """An impression's state: where it counts (group, trace ts) and what it counts (signals, vote, reason)."""

    __slots__ = ("project_id", "grp", "trace_ts", "signals", "vote", "vote_ts", "reason")

    def __init__(self, project_id: int, grp: int, trace_ts: int, signals: int = 0, vote: int | None = None,
                 vote_ts: int | None = None, reason: str | None = None) -> None:
        self.project_id, self.grp, self.trace_ts, self.signals = project_id, grp, trace_ts, signals
        self.vote, self.vote_ts, self.reason = vote, vote_ts, reason

    def state(self) -> tuple[Any, ...]:
        return self.project_id, self.grp, self.trace_ts, self.signals, self.vote, self.vote_ts, self.reason


class _Deltas:
    """Changes to rollup_hours and rollup_reasons, summed per row before they are written."""

    def __init__(self) -> None:
        self.hours: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0] * len(_COLUMNS))
        self.reasons: dict[tuple[int, int, str], int] = defaultdict(int)

    def add(self, impression: _Impression, sign: int) -> None:
        """Add (sign 1) or take away (sign -1) one impression's contribution."""
        hour = impression.trace_ts // HOUR_MS * HOUR
        row = self.hours[impression.grp, hour]
        row[_SHOWN] += sign
        for bit, column in _IMPLICIT:
            if impression.signals & bit:
                row[column] += sign
        if impression.signals:
            row[_IMPLICIT_ANY] += sign
        if impression.vote is not None:
            row[_ANY] += sign
            row[_UP if impression.vote == UP else _DOWN] += sign
            if impression.vote == DOWN and impression.reason is not None:
                self.reasons[impression.grp, hour, impression.reason] += sign

    def rows(self) -> tuple[list[tuple[Any, int, list[int]]], list[tuple[Any, int, str, int]]]:
        """The changes as rollup_hours rows (group, hour, counts) and rollup_reasons rows (group, hour, reason, n)."""
        return ([(grp, hour, row) for (grp, hour), row in self.hours.items() if any(row)],
                [(grp, hour, reason, n) for (grp, hour, reason), n in self.reasons.items() if n])


def _write_deltas(conn: sqlite3.Connection, hours: Iterable[tuple[Any, int, list[int]]],
                  reasons: Iterable[tuple[Any, int, str, int]], ids: dict[Any, int] | None = None) -> None:
    """Add changes (`_Deltas.rows`) to the rollups; `ids`: the group ids of the groups named by label (`FoldPlan`)."""
    summed: dict[tuple[int, int], list[int]] = {}
    for grp, hour, row in hours:
        key = (ids[grp] if type(grp) is tuple else grp, hour)  # type: ignore[index]
        if key in summed:  # a new impression's group that older ones counted in already
            summed[key] = [a + b for a, b in zip(summed[key], row)]
        else:
            summed[key] = row
    rows = [(grp, hour, *row) for (grp, hour), row in summed.items() if any(row)]
    if rows:
        conn.executemany(_UPSERT_HOURS, rows)
    by_reason: dict[tuple[int, int, str], int] = defaultdict(int)
    for grp, hour, reason, n in reasons:
        by_reason[ids[grp] if type(grp) is tuple else grp, hour, reason] += n  # type: ignore[index]
    rows = [(grp, hour, reason, n) for (grp, hour, reason), n in by_reason.items() if n]
    if rows:
        conn.executemany(_UPSERT_REASONS, rows)


_UPSERT_HOURS = (
    f"INSERT INTO rollup_hours (grp, hour, {', '.join(_COLUMNS)}) VALUES (?, ?, {', '.join('?' * len(_COLUMNS))})"
    f" ON CONFLICT (grp, hour) DO UPDATE SET {', '.join(f'{c} = {c} + excluded.{c}' for c in _COLUMNS)}")
_UPSERT_REASONS = ("INSERT INTO rollup_reasons (grp, hour, reason, n) VALUES (?, ?, ?, ?)"
                   " ON CONFLICT (grp, hour, reason) DO UPDATE SET n = n + excluded.n")
_INSERT_IMPRESSIONS = (
    "INSERT INTO impressions (trace, session_id, project_id, grp, trace_ts, signals, vote, vote_ts, reason)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
_UPDATE_IMPRESSIONS = ("UPDATE impressions SET signals = ?, vote = ?, vote_ts = ?, reason = ?"
                       " WHERE trace = ? AND session_id = ?")


def _groups(conn: sqlite3.Connection, labels: Iterable[tuple[int, str | None, str | None, str | None]]
            ) -> dict[tuple[int, str | None, str | None, str | None], int]:
    """The group id of each (project, model, template, template_version), created where missing."""
    keys = {label: _encode(label).decode() for label in set(labels)}
    if not keys:
        return {}
    conn.executemany("INSERT INTO rollup_groups (project_id, model, template, template_version, key)"
                     " VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                     [(*label, key) for label, key in keys.items()])
    ids = dict(conn.execute("SELECT key, id FROM rollup_groups WHERE key IN (SELECT value FROM json_each(?))",
                            (_encode(list(keys.values())),)))
    return {label: ids[key] for label, key in keys.items()}


# Per impression with events in a seq range: its signals there (the bits of its events' distinct types; `_VOTED` marks
# one with a vote), its current vote (from `votes`, which the commits keep: newest by client ts, the later event on a
# tie), its stored state if it has one, and else its trace. Summed in SQL: in C, it costs the folder process less CPU
# than a walk in Python; DISTINCT first keeps the rows to sort few (docs/benchmarks.md).
_VOTED = 1 << len(IMPLICIT_SIGNALS)
_FOLD = (
    "SELECT e.trace, e.session_id, e.signals, v.value, v.ts, v.reason,"
    " i.project_id, i.grp, i.trace_ts, i.signals, i.vote, i.vote_ts, i.reason,"
    " t.project_id, t.ts, t.model, t.template, t.template_version"
    " FROM (SELECT trace, session_id, sum(CASE type"
    f" {' '.join(f'WHEN {n!r} THEN {b}' for n, b in BIT.items())} WHEN 'feedback' THEN {_VOTED} ELSE 0 END)"
    " AS signals FROM (SELECT DISTINCT trace, session_id, type FROM events WHERE seq > ? AND seq <= ?)"
    " GROUP BY trace, session_id) AS e"
    f" LEFT JOIN votes AS v ON e.signals & {_VOTED} AND v.trace = e.trace AND v.session_id = e.session_id"
    " LEFT JOIN impressions AS i ON i.trace = e.trace AND i.session_id = e.session_id"
    " LEFT JOIN traces AS t ON i.trace IS NULL AND t.row = e.trace")
_LAST_SEQ = "SELECT coalesce(max(seq), 0) FROM events"
_FOLDED = "SELECT value FROM meta WHERE name = 'rollups_folded'"
_SET_FOLDED = ("INSERT INTO meta (name, value) VALUES ('rollups_folded', ?)"
               " ON CONFLICT (name) DO UPDATE SET value = excluded.value")
# Bumped by each `retrace`: a plan read before it may hold the trace's old group and ts (for the impressions it
# adds) or the old state of the impressions it moved.
_EPOCH = "SELECT coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE name = 'rollups_epoch'), 0)"
_BUMP_EPOCH = ("INSERT INTO meta (name, value) VALUES ('rollups_epoch', '1')"
               " ON CONFLICT (name) DO UPDATE SET value = CAST(value AS INTEGER) + 1")
# A plan touches PLAN_ROWS impressions at most (its memory, and the writer's pause to apply it): `plan_next` sizes each
# plan's span of events by the last one, starting at FIRST_SPAN, at most MAX_SPAN (what the query sorts meanwhile).
PLAN_ROWS = 10_000
FIRST_SPAN, MAX_SPAN = 10_000, 500_000

_Label = tuple[int, str | None, str | None, str | None]  # (project, model, template, template_version)


class FoldPlan(msgspec.Struct, array_like=True):
    """What folding the events `first < seq <= last` writes, worked out from what was stored at `epoch` with the
    watermark at `first`. New impressions' groups are still labels (`_Label`): `apply` gives them their ids. A Struct,
    so the folder process sends it to the writer as it is (`gateway/store/folder.py`)."""

    first: int
    last: int
    epoch: int
    # (trace, session, project, group label, trace ts, signals, vote, vote ts, reason)
    inserts: list[tuple[int, str, int, _Label, int, int, int | None, int | None, str | None]] = []
    # (signals, vote, vote ts, reason, trace, session)
    updates: list[tuple[int, int | None, int | None, str | None, int, str]] = []
    hours: list[tuple[int | _Label, int, list[int]]] = []  # _Deltas.rows()
    reasons: list[tuple[int | _Label, int, str, int]] = []
    touched: int = 0  # impressions with events in the range (those that change are inserts and updates)


def plan(conn: sqlite3.Connection, first_seq: int, last_seq: int, most: int | None = None) -> FoldPlan | None:
    """Work out the fold of the events with `first_seq < seq <= last_seq`, reading only: on a snapshot (one read
    transaction, or the writer's own), so a process beside the writer can do this and the writer `apply` it. None if
    the events touch more than `most` impressions (given up on as soon as that is known)."""
    result = FoldPlan(first_seq, last_seq, conn.execute(_EPOCH).fetchone()[0])
    deltas = _Deltas()
    rows, touched = conn.execute(_FOLD, (first_seq, last_seq)), 0
    for touched, (trace, session, signals, vote, vote_ts, reason, *stored, project, ts, model, template,
                  version) in enumerate(rows, 1):
        if most is not None and touched > most:
            return None
        signals &= ~_VOTED
        if stored[0] is None:
            new = _Impression(project, (project, model, template, version), ts, signals, vote, vote_ts, reason)
            result.inserts.append((trace, session, *new.state()))
        else:
            old = _Impression(*stored)
            new = _Impression(*stored)
            new.signals |= signals
            if vote is not None and (new.vote_ts is None or vote_ts >= new.vote_ts):
                new.vote, new.vote_ts, new.reason = vote, vote_ts, reason
            if new.state() == old.state():
                continue
            deltas.add(old, -1)
            # Where it counts stays (only `retrace` moves it), so the index by time is left as it is.
            result.updates.append((new.signals, new.vote, new.vote_ts, new.reason, trace, session))
        deltas.add(new, 1)
    result.hours, result.reasons = deltas.rows()
    result.touched = touched
    return result


def apply(conn: sqlite3.Connection, fold: FoldPlan) -> bool:
    """Write `fold` and move the watermark to its end (inside the caller's write transaction), if what it was worked
    out from still holds: the watermark where it began and no impression moved since. False (nothing written) if not:
    plan it again."""
    if watermark(conn) != fold.first or conn.execute(_EPOCH).fetchone()[0] != fold.epoch:
        return False
    labels = {row[3] for row in fold.inserts}
    ids = _groups(conn, labels)
    if fold.inserts:
        conn.executemany(_INSERT_IMPRESSIONS, [(*row[:3], ids[row[3]], *row[4:]) for row in fold.inserts])
    if fold.updates:
        conn.executemany(_UPDATE_IMPRESSIONS, fold.updates)
    _write_deltas(conn, fold.hours, fold.reasons, ids)
    if fold.last != fold.first:
        conn.execute(_SET_FOLDED, (str(fold.last),))
    return True


def watermark(conn: sqlite3.Connection) -> int | None:
    """The last event seq folded into the rollups (None in a file whose rollups were kept inside each commit)."""
    row = conn.execute(_FOLDED).fetchone()
    return None if row is None else int(row[0])


def last_seq(conn: sqlite3.Connection) -> int:
    return conn.execute(_LAST_SEQ).fetchone()[0]


def catch_up(conn: sqlite3.Connection) -> int:
    """Fold every event committed after the watermark in and move the watermark (inside the caller's transaction,
    which holds the write lock, so no event commits meanwhile). Returns how many seqs it moved by."""
    last = last_seq(conn)
    folded = watermark(conn)
    if folded is None:
        # Rollups kept inside each commit, before the watermark: the store catches up when it opens
        # (`SQLiteStore.open`), before it commits any event, so every event stored by then was folded.
        conn.execute(_SET_FOLDED, (str(last),))
        return 0
    span = FIRST_SPAN
    while (step := plan_next(conn, last, span))[0] is not None:
        fold, span = step
        applied = apply(conn, fold)
        assert applied, "a plan made inside the same transaction holds"
    return last - folded


@contextlib.contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One snapshot of the store: the caller's open transaction, or a read transaction of its own."""
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("ROLLBACK")


def plan_next(conn: sqlite3.Connection, target: int, span: int) -> tuple[FoldPlan | None, int]:
    """The next plan from the watermark towards seq `target`, on one snapshot (`snapshot`), and the span to plan the
    one after it with. It covers `span` events at most and touches PLAN_ROWS impressions at most: the span halves until
    it does (an event touches one). The span doubles after a plan it cut short that touched less than half of
    PLAN_ROWS. None once the watermark is at `target` (or past it, or not kept: `catch_up`)."""
    with snapshot(conn):
        first = watermark(conn)
        if first is None or first >= target:
            return None, span
        while (fold := plan(conn, first, min(target, first + span), PLAN_ROWS)) is None:
            span = max(1, span // 2)
    if fold.last < target and fold.touched < PLAN_ROWS // 2:
        span = min(MAX_SPAN, span * 2)
    return fold, span


def upgrade_from_2(conn: sqlite3.Connection) -> None:
    """A file written before rollups: build them from the whole log (its `SCHEMA` set the watermark to 0)."""
    catch_up(conn)


class CatchUp(msgspec.Struct, tag="rollups_catch_up", array_like=True):
    """Fold every event committed so far in, under the write lock: the last step of a read's catch-up (`Stats`)."""


class Fold(msgspec.Struct, tag="rollups_fold", array_like=True):
    """Apply a plan worked out beside the writer (by a read's catch-up): the answer is `apply`'s."""

    plan: FoldPlan


Job = CatchUp | Fold
JOBS = (CatchUp, Fold)


def run(conn: sqlite3.Connection, job: Job) -> int | bool:
    if isinstance(job, Fold):
        return apply(conn, job.plan)
    return catch_up(conn)


def retrace(conn: sqlite3.Connection, project_id: int, trace_id: str) -> int:
    """After a trace is (re-)logged: move its impressions to its current group and hour. Returns how many moved."""
    found = conn.execute("SELECT row, ts, model, template, template_version FROM traces"
                         " WHERE project_id = ? AND trace_id = ?", (project_id, trace_id)).fetchone()
    if found is None:
        return 0
    trace, ts, model, template, version = found
    conn.execute(_BUMP_EPOCH)  # whether or not an impression moves: a plan may hold the trace's old group and ts
    rows = conn.execute("SELECT project_id, grp, trace_ts, signals, vote, vote_ts, reason FROM impressions"
                        " WHERE trace = ?", (trace,)).fetchall()
    if not rows:
        return 0
    grp = _groups(conn, [(project_id, model, template, version)])[project_id, model, template, version]
    deltas, moved = _Deltas(), 0
    for row in rows:
        old = _Impression(*row)
        if (old.grp, old.trace_ts) == (grp, ts):
            continue
        deltas.add(old, -1)
        old.grp, old.trace_ts = grp, ts
        deltas.add(old, 1)
        moved += 1
    if moved:
        conn.execute("UPDATE impressions SET grp = ?, trace_ts = ? WHERE trace = ?", (grp, ts, trace))
        _write_deltas(conn, *deltas.rows())
    return moved


# --- Reads ---

_DIMENSIONS = {"model": "g.model", "template": "g.template", "template_version": "g.template_version",
               "day": f"r.hour - r.hour % {DAY}", "hour": "r.hour"}


def _split(query: StatsQuery) -> tuple[tuple[int | None, int | None] | None, list[tuple[int | None, int | None]]]:
    """The query's range as whole hours `(first, end)` in unix seconds (None where the range is open; None for no
    whole hour) and the parts of hours at its ends, as ms ranges `(start, stop)`."""
    first = None if query.from_ms is None else -(-query.from_ms // HOUR_MS) * HOUR
    end = None if query.to_ms is None else query.to_ms // HOUR_MS * HOUR
    if first is not None and end is not None and end <= first:
        return None, [(query.from_ms, query.to_ms)]
    edges: list[tuple[int | None, int | None]] = []
    if first is not None and query.from_ms < first * 1000:  # type: ignore[operator]
        edges.append((query.from_ms, first * 1000))
    if end is not None and end * 1000 < query.to_ms:  # type: ignore[operator]
        edges.append((end * 1000, query.to_ms))
    return (first, end), edges


def _filters(project_id: int, query: StatsQuery, first: int | None, end: int | None) -> tuple[str, list[Any]]:
    where, params = ["g.project_id = ?"], [project_id]
    for name, value in (("model", query.model), ("template", query.template)):
        if value is not None:
            where.append(f"g.{name} = ?")
            params.append(value)
    if first is not None:
        where.append("r.hour >= ?")
        params.append(first)
    if end is not None:
        where.append("r.hour < ?")
        params.append(end)
    return " AND ".join(where), params


def _key(values: Sequence[Any], group_by: Sequence[str]) -> GroupKey:
    return tuple(bucket(v * 1000, d) if d in ("day", "hour") else v  # type: ignore[arg-type]
                 for v, d in zip(values, group_by))


def _rollup_counts(conn: sqlite3.Connection, project_id: int, query: StatsQuery, first: int | None,
                   end: int | None) -> dict[GroupKey, GroupCounts]:
    dims = [_DIMENSIONS[d] for d in query.group_by]
    where, params = _filters(project_id, query, first, end)
    group = f" GROUP BY {', '.join(dims)}" if dims else ""
    counts: dict[GroupKey, GroupCounts] = {}
    sums = ", ".join(f"sum(r.{c})" for c in _COLUMNS)
    for row in conn.execute(f"SELECT {', '.join([*dims, sums])} FROM rollup_groups AS g"
                            f" JOIN rollup_hours AS r ON r.grp = g.id WHERE {where}{group}", params):
        values, totals = row[:len(dims)], row[len(dims):]
        if not totals[0]:
            continue
        counts[_key(values, query.group_by)] = GroupCounts(
            shown=totals[0], signals={name: n for name, n in zip(SIGNALS, totals[1:]) if n})
    for row in conn.execute(f"SELECT {', '.join([*dims, 'r.reason', 'sum(r.n)'])} FROM rollup_groups AS g"
                            f" JOIN rollup_reasons AS r ON r.grp = g.id WHERE {where}"
                            f" GROUP BY {', '.join([*dims, 'r.reason'])}", params):
        key = _key(row[:len(dims)], query.group_by)
        if row[-1] and key in counts:
            counts[key].reasons[row[-2]] = row[-1]
    return counts


_IMPRESSION_ROWS = ("SELECT i.trace, i.session_id, i.trace_ts, g.model, g.template, g.template_version, i.signals,"
                    " i.vote, i.reason FROM impressions AS i JOIN rollup_groups AS g ON g.id = i.grp")


def _log_rows(rows: Iterable[Sequence[Any]]) -> Iterable[LogRow]:
    """Impressions as the log rows that make them (the reference counting in `rates` then counts them)."""
    for trace, session, trace_ts, model, template, version, signals, vote, reason in rows:
        common = {"trace_id": str(trace), "session_id": session, "ts": 0, "trace_ts": trace_ts, "model": model,
                  "template": template, "template_version": version}
        yield LogRow(type="shown", **common)
        for name in IMPLICIT_SIGNALS:
            if signals & BIT[name]:
                yield LogRow(type=name, **common)
        if vote is not None:
            yield LogRow(type="feedback", value=vote, reason=reason, **common)


def _impression_counts(rows: Iterable[Sequence[Any]], query: StatsQuery) -> dict[GroupKey, GroupCounts]:
    """Every given impression counted in the query's groups and filters (the caller picked the range)."""
    everything = msgspec.structs.replace(query, from_ms=None, to_ms=None, include_flagged=True)
    return count_groups(_log_rows(rows), everything)[0]


def _time_filter(from_ms: int | None, to_ms: int | None) -> tuple[str, list[int]]:
    where, params = "", []
    if from_ms is not None:
        where += " AND i.trace_ts >= ?"
        params.append(from_ms)
    if to_ms is not None:
        where += " AND i.trace_ts < ?"
        params.append(to_ms)
    return where, params


def flagged_sessions(conn: sqlite3.Connection, project_id: int, query: StatsQuery) -> list[str]:
    """The sessions the outlier rule flags in the query's range (model and template filters do not apply)."""
    where, params = _time_filter(query.from_ms, query.to_ms)
    return [session for (session,) in conn.execute(
        f"SELECT i.session_id FROM impressions AS i WHERE i.project_id = ? AND i.vote IS NOT NULL{where}"
        " GROUP BY i.session_id HAVING count(*) >= ? AND min(i.vote) = max(i.vote)",
        [project_id, *params, query.outlier_min_votes])]


def stats(conn: sqlite3.Connection, project_id: int, query: StatsQuery) -> StatsAnswer:
    """The /v1/stats answer from the rollups (equal to `rates.compute_stats` over the project's log)."""
    whole, edges = _split(query)
    counts = _rollup_counts(conn, project_id, query, *whole) if whole is not None else {}
    for start, stop in edges:
        where, params = _time_filter(start, stop)
        rows = conn.execute(f"{_IMPRESSION_ROWS} WHERE i.project_id = ?{where}", [project_id, *params])
        for key, part in _impression_counts(rows, query).items():
            counts.setdefault(key, GroupCounts()).add(part)
    flagged = flagged_sessions(conn, project_id, query)
    if flagged and not query.include_flagged:
        where, params = _time_filter(query.from_ms, query.to_ms)
        # By session: a flagged session has few impressions, the range may have millions.
        rows = conn.execute(f"{_IMPRESSION_ROWS.replace('AS i', 'AS i INDEXED BY impressions_by_session', 1)}"
                            f" WHERE i.session_id IN (SELECT value FROM json_each(?)) AND i.project_id = ?{where}",
                            [_encode(flagged), project_id, *params])
        for key, part in _impression_counts(rows, query).items():
            counts.setdefault(key, GroupCounts()).add(part, sign=-1)
    return build_answer(counts, query, len(flagged))


def hour_counts(conn: sqlite3.Connection, project_id: int, first: int, end: int
                ) -> list[tuple[int, str | None, str | None, dict[str, int]]]:
    """Per completed hour in [first, end) (unix seconds) and (model, template): impressions and signal counts, as
    `(hour, model, template, {"shown": n, signal: n, ...})`, oldest hour first. Flagged sessions are included (the
    outlier rule is a property of a range; the detector sees each hour once)."""
    sums = ", ".join(f"sum(r.{c})" for c in _COLUMNS)
    return [(hour, model, template, dict(zip(_COLUMNS, totals))) for hour, model, template, *totals in conn.execute(
        f"SELECT r.hour, g.model, g.template, {sums} FROM rollup_groups AS g JOIN rollup_hours AS r ON r.grp = g.id"
        " WHERE g.project_id = ? AND r.hour >= ? AND r.hour < ? GROUP BY r.hour, g.model, g.template"
        " ORDER BY r.hour", (project_id, first, end))]


def first_hour(conn: sqlite3.Connection, project_id: int) -> int | None:
    """The earliest hour the project's rollups hold, if any."""
    return conn.execute("SELECT min(r.hour) FROM rollup_groups AS g JOIN rollup_hours AS r ON r.grp = g.id"
                        " WHERE g.project_id = ?", (project_id,)).fetchone()[0]


def log_rows(conn: sqlite3.Connection, project_id: int) -> list[LogRow]:
    """The project's whole event log joined with the traces as they are now, in commit order: what
    `rates.compute_stats` counts from (the reference the rollups are tested and benchmarked against)."""
    return [LogRow(trace_id=trace_id, session_id=session, type=kind, ts=ts, trace_ts=trace_ts, value=value,
                   reason=reason, model=model, template=template, template_version=version)
            for trace_id, session, kind, ts, trace_ts, value, reason, model, template, version in conn.execute(
                "SELECT t.trace_id, e.session_id, e.type, e.ts, t.ts, e.value, e.reason, t.model, t.template,"
                " t.template_version FROM events AS e JOIN traces AS t ON t.row = e.trace WHERE e.project_id = ?"
                " ORDER BY e.seq", (project_id,))]


class Stats:
    """The rollups' part of a store (`store.stats`): each read first folds in every event committed so far
    (`catch_up`), then reads on the store's read connection, so it counts every event acknowledged before it."""

    def __init__(self, read: Callable[..., Awaitable[Any]], write: Callable[[Job], Awaitable[Any]]) -> None:
        self._read = read
        self._write = write

    async def catch_up(self) -> int:
        """Fold in every event committed before the call; how many seqs the watermark moved by. What the folder has
        not folded yet is planned here, on the read connection beside the commits, and the writer only applies each
        plan (`Fold`); the events committed since, or all that is left once a plan is refused (the folder applied one
        meanwhile), are folded under the write lock (`CatchUp`)."""
        target, span, moved = await self._read(last_seq), FIRST_SPAN, 0
        while True:
            fold, span = await self._read(plan_next, target, span)
            if fold is None or not await self._write(Fold(fold)):
                return moved + await self._write(CatchUp())
            moved += fold.last - fold.first

    async def answer(self, project_id: int, query: StatsQuery) -> StatsAnswer:
        await self.catch_up()
        return await self._read(stats, project_id, query)

    async def hour_counts(self, project_id: int, first: int, end: int
                          ) -> list[tuple[int, str | None, str | None, dict[str, int]]]:
        await self.catch_up()
        return await self._read(hour_counts, project_id, first, end)

    async def first_hour(self, project_id: int) -> int | None:
        await self.catch_up()
        return await self._read(first_hour, project_id)
