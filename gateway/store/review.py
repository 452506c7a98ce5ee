"""The review loop's tables and statements: each trace's prompt (columns of `traces`), reviewers, label taxonomies,
queues, their items, leases, labels and skips; and the reads behind fills and exports. Plain functions of a
connection, as in `tables.py`.

Leases (one write transaction each, so in the writer they serialize):
- `claim` gives a reviewer the item they already hold in the queue (a reload gets the same item back), else the first
  item (in fill order) that is not done, not held by a live lease, and that this reviewer has neither labeled nor
  skipped; the lease runs `lease_seconds` from now. An expired lease is simply taken over: the old holder's claim is
  marked `lost`.
- `label` and `skip` are the holder's: a reviewer who is not the holder gets `not_holder` (409), or `lease_lost` (410)
  when their lease expired and another reviewer took the item since. A holder whose lease expired but that nobody took
  may still finish. A label ends the claim; the item is done once `reviewers_per_item` different reviewers labeled
  it. A skip ends the claim too: the item goes back for the others, never again to this reviewer.
- Counts: `done`; `leased` (held by a live lease); `skipped` (neither, and skipped by someone: still open to the
  others); `pending` (the rest). They add up to the queue's items.
"""

from __future__ import annotations

import functools
import json
import secrets
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from gateway import tokens
from gateway.messages import Input, Message, prompt_key
from gateway.schemas import TraceIn

SCHEMA = """
CREATE TABLE IF NOT EXISTS reviewers (
    id TEXT PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects (id),
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS reviewers_live_name ON reviewers (project_id, name) WHERE revoked_at IS NULL;
CREATE TABLE IF NOT EXISTS label_sets (project_id INTEGER PRIMARY KEY REFERENCES projects (id), labels TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queues (
    id TEXT PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects (id),
    spec TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    filled_at INTEGER
);
-- `key` is the trace id, or for a pairwise item its pair's key; `a` and `b` are trace ids in the order shown.
CREATE TABLE IF NOT EXISTS queue_items (
    id INTEGER PRIMARY KEY,
    queue_id TEXT NOT NULL REFERENCES queues (id),
    key TEXT NOT NULL,
    a TEXT NOT NULL,
    b TEXT,
    strategy TEXT NOT NULL,
    judge TEXT,
    done INTEGER NOT NULL DEFAULT 0,
    holder TEXT,
    lease_expires_at INTEGER,
    added_at INTEGER NOT NULL,
    UNIQUE (queue_id, key)
);
CREATE INDEX IF NOT EXISTS queue_items_open ON queue_items (queue_id, done, id);
CREATE INDEX IF NOT EXISTS queue_items_by_a ON queue_items (a);
CREATE INDEX IF NOT EXISTS queue_items_by_b ON queue_items (b);
-- Every claim, and how it ended: NULL while held, then labeled, skipped or lost.
CREATE TABLE IF NOT EXISTS queue_claims (
    id INTEGER PRIMARY KEY,
    item INTEGER NOT NULL REFERENCES queue_items (id),
    reviewer TEXT NOT NULL,
    claimed_at INTEGER NOT NULL,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS queue_claims_by_item ON queue_claims (item, reviewer);
CREATE TABLE IF NOT EXISTS queue_labels (
    item INTEGER NOT NULL REFERENCES queue_items (id),
    reviewer TEXT NOT NULL,
    labels TEXT NOT NULL,
    note TEXT,
    preferred TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (item, reviewer)
) WITHOUT ROWID;
"""

DEFAULT_LABELS: tuple[str, ...] = ("factual_error", "missed_instructions", "tone", "hallucinated_link", "too_long",
                                   "unsafe", "other")
_encode = msgspec.json.Encoder().encode
_decode_messages = msgspec.json.Decoder(list[Message]).decode


# --- Traces' prompts ---

def stored_input(trace: TraceIn) -> str | None:
    """What `traces.input` holds: the text, or the messages as JSON (`traces.messages` says which)."""
    return trace.input if trace.input is None or isinstance(trace.input, str) else _encode(trace.input).decode()


def loaded_input(text: str | None, messages: int | None) -> Input | None:
    return _decode_messages(text) if messages and text is not None else text


def record_prompt(conn: sqlite3.Connection, project_id: int, trace: TraceIn) -> None:
    """Store the trace's prompt key and parent, after `tables.upsert_trace` stored the trace itself. A regeneration
    takes its parent's key when the parent is logged and has one (log the parent first); else its own input's."""
    key = None
    if trace.parent_trace_id is not None and trace.parent_trace_id != trace.trace_id:
        found = conn.execute("SELECT prompt_key FROM traces WHERE project_id = ? AND trace_id = ?",
                             (project_id, trace.parent_trace_id)).fetchone()
        key = found[0] if found else None
    if key is None and trace.input is not None:
        key = prompt_key(trace.input)
    conn.execute("UPDATE traces SET prompt_key = ?, parent_trace_id = ?, messages = ? WHERE project_id = ?"
                 " AND trace_id = ?", (key, trace.parent_trace_id, int(isinstance(trace.input, list)), project_id,
                                       trace.trace_id))


def upgrade_from_2(conn: sqlite3.Connection) -> None:
    """A version 2 file: the traces' review columns (a file upgraded from the first schema has them already), and
    every trace's prompt key from its input, which was always text then."""
    columns = {column for _, column, *_ in conn.execute("PRAGMA table_info(traces)")}
    for column in ("prompt_key TEXT", "parent_trace_id TEXT", "messages INTEGER NOT NULL DEFAULT 0"):
        if column.split()[0] not in columns:
            conn.execute(f"ALTER TABLE traces ADD COLUMN {column}")
    conn.execute("CREATE INDEX IF NOT EXISTS traces_by_prompt ON traces (project_id, prompt_key)")
    rows = conn.execute("SELECT row, input FROM traces WHERE prompt_key IS NULL AND input IS NOT NULL").fetchall()
    conn.executemany("UPDATE traces SET prompt_key = ? WHERE row = ?", [(prompt_key(text), row) for row, text in rows])


# --- Reviewers and labels ---

@dataclass(frozen=True)
class Reviewer:
    id: str
    project_id: int
    name: str
    created_at: int
    revoked_at: int | None


def add_reviewer(conn: sqlite3.Connection, project_id: int, name: str, now: int) -> str | None:
    """A new reviewer key (shown once, stored hashed), or None when a live reviewer has this name."""
    key = "rk_" + secrets.token_urlsafe(32)
    try:
        conn.execute("INSERT INTO reviewers (id, project_id, name, key_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                     ("rv_" + secrets.token_urlsafe(9), project_id, name, tokens.secret_hash(key), now))
    except sqlite3.IntegrityError:
        return None
    return key


def revoke_reviewer(conn: sqlite3.Connection, project_id: int, name: str, now: int) -> bool:
    return conn.execute("UPDATE reviewers SET revoked_at = ? WHERE project_id = ? AND name = ? AND revoked_at IS NULL",
                        (now, project_id, name)).rowcount == 1


_REVIEWER_SELECT = "SELECT id, project_id, name, created_at, revoked_at FROM reviewers"


def reviewer_by_key(conn: sqlite3.Connection, key: str) -> Reviewer | None:
    row = conn.execute(_REVIEWER_SELECT + " WHERE key_hash = ?", (tokens.secret_hash(key),)).fetchone()
    return Reviewer(*row) if row else None


def reviewer_by_id(conn: sqlite3.Connection, reviewer_id: str) -> Reviewer | None:
    row = conn.execute(_REVIEWER_SELECT + " WHERE id = ?", (reviewer_id,)).fetchone()
    return Reviewer(*row) if row else None


def reviewers_of(conn: sqlite3.Connection, project_id: int) -> list[Reviewer]:
    return [Reviewer(*row) for row in conn.execute(_REVIEWER_SELECT + " WHERE project_id = ? ORDER BY created_at",
                                                   (project_id,))]


def labels_of(conn: sqlite3.Connection, project_id: int) -> list[str]:
    row = conn.execute("SELECT labels FROM label_sets WHERE project_id = ?", (project_id,)).fetchone()
    return json.loads(row[0]) if row else list(DEFAULT_LABELS)


def set_labels(conn: sqlite3.Connection, project_id: int, labels: Sequence[str]) -> list[str]:
    conn.execute("INSERT INTO label_sets (project_id, labels) VALUES (?, ?)"
                 " ON CONFLICT (project_id) DO UPDATE SET labels = excluded.labels", (project_id, json.dumps(labels)))
    return list(labels)


# --- Queues ---

@dataclass(frozen=True)
class QueueRow:
    id: str
    project_id: int
    spec: str  # JSON of `gateway.review.queues.QueueSpec`
    created_at: int
    filled_at: int | None


def create_queue(conn: sqlite3.Connection, project_id: int, spec: str, now: int) -> str:
    queue_id = "q_" + secrets.token_urlsafe(9)
    conn.execute("INSERT INTO queues (id, project_id, spec, created_at) VALUES (?, ?, ?, ?)",
                 (queue_id, project_id, spec, now))
    return queue_id


def queue_by_id(conn: sqlite3.Connection, project_id: int, queue_id: str) -> QueueRow | None:
    row = conn.execute("SELECT id, project_id, spec, created_at, filled_at FROM queues WHERE project_id = ? AND id = ?",
                       (project_id, queue_id)).fetchone()
    return QueueRow(*row) if row else None


def queues_of(conn: sqlite3.Connection, project_id: int | None = None) -> list[QueueRow]:
    """A project's queues, or every project's (None), oldest first."""
    where, args = ("WHERE project_id = ?", (project_id,)) if project_id is not None else ("", ())
    return [QueueRow(*row) for row in conn.execute(
        f"SELECT id, project_id, spec, created_at, filled_at FROM queues {where} ORDER BY created_at, id", args)]


class NewItem(msgspec.Struct, array_like=True):
    key: str
    a: str
    b: str | None
    strategy: str
    judge: str | None  # JSON of the judge's suggestion(s), or None


def add_items(conn: sqlite3.Connection, queue_id: str, items: Sequence[NewItem], now: int) -> dict[str, int]:
    """Add a fill's items; a key already in the queue is left as it is. How many went in, per strategy."""
    added: dict[str, int] = {}
    for item in items:
        went_in = conn.execute(
            "INSERT INTO queue_items (queue_id, key, a, b, strategy, judge, added_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (queue_id, key) DO NOTHING",
            (queue_id, item.key, item.a, item.b, item.strategy, item.judge, now)).rowcount
        if went_in:
            added[item.strategy] = added.get(item.strategy, 0) + 1
    conn.execute("UPDATE queues SET filled_at = ? WHERE id = ?", (now, queue_id))
    return added


Outcome = Literal["ok", "not_found", "not_holder", "lease_lost", "preferred_missing", "preferred_unexpected"]


class Claimed(msgspec.Struct, array_like=True):
    item_id: int
    a: str
    b: str | None
    judge: str | None
    lease_expires_at: int


def claim(conn: sqlite3.Connection, queue_id: str, reviewer: str, lease_ms: int, now: int) -> Claimed | None:
    """The item this reviewer now holds (see the module's rules), or None when none is left for them."""
    columns = "id, a, b, judge, lease_expires_at"
    held = conn.execute(f"SELECT {columns} FROM queue_items WHERE queue_id = ? AND done = 0 AND holder = ?"
                        " AND lease_expires_at > ? ORDER BY id LIMIT 1", (queue_id, reviewer, now)).fetchone()
    if held:
        return Claimed(*held)
    found = conn.execute(
        "SELECT id, holder FROM queue_items AS i WHERE queue_id = ? AND done = 0"
        " AND (holder IS NULL OR lease_expires_at <= ?) AND NOT EXISTS (SELECT 1 FROM queue_claims AS c"
        " WHERE c.item = i.id AND c.reviewer = ? AND c.outcome IN ('labeled', 'skipped')) ORDER BY id LIMIT 1",
        (queue_id, now, reviewer)).fetchone()
    if found is None:
        return None
    item, holder = found
    if holder != reviewer:
        if holder is not None:
            conn.execute("UPDATE queue_claims SET outcome = 'lost' WHERE item = ? AND reviewer = ? AND outcome IS NULL",
                         (item, holder))
        conn.execute("INSERT INTO queue_claims (item, reviewer, claimed_at) VALUES (?, ?, ?)", (item, reviewer, now))
    conn.execute("UPDATE queue_items SET holder = ?, lease_expires_at = ? WHERE id = ?",
                 (reviewer, now + lease_ms, item))
    return Claimed(*conn.execute(f"SELECT {columns} FROM queue_items WHERE id = ?", (item,)).fetchone())


def _held(conn: sqlite3.Connection, queue_id: str, item: int, reviewer: str) -> tuple[Outcome, str | None]:
    """Whether `reviewer` holds the item (then "ok" and its `b`), else why not."""
    row = conn.execute("SELECT holder, b FROM queue_items WHERE queue_id = ? AND id = ?", (queue_id, item)).fetchone()
    if row is None:
        return "not_found", None
    holder, b = row
    if holder == reviewer:
        return "ok", b
    last = conn.execute("SELECT outcome FROM queue_claims WHERE item = ? AND reviewer = ? ORDER BY id DESC LIMIT 1",
                        (item, reviewer)).fetchone()
    return ("lease_lost" if last is not None and last[0] == "lost" else "not_holder"), b


def _end_claim(conn: sqlite3.Connection, item: int, reviewer: str, outcome: str) -> None:
    conn.execute("UPDATE queue_claims SET outcome = ? WHERE item = ? AND reviewer = ? AND outcome IS NULL",
                 (outcome, item, reviewer))
    conn.execute("UPDATE queue_items SET holder = NULL, lease_expires_at = NULL WHERE id = ?", (item,))


def label(conn: sqlite3.Connection, queue_id: str, item: int, reviewer: str, labels: Sequence[str], note: str | None,
          preferred: str | None, reviewers_per_item: int, now: int) -> Outcome:
    outcome, b = _held(conn, queue_id, item, reviewer)
    if outcome != "ok":
        return outcome
    if (b is None) != (preferred is None):
        return "preferred_missing" if preferred is None else "preferred_unexpected"
    conn.execute("INSERT INTO queue_labels (item, reviewer, labels, note, preferred, created_at)"
                 " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (item, reviewer) DO UPDATE SET labels = excluded.labels,"
                 " note = excluded.note, preferred = excluded.preferred, created_at = excluded.created_at",
                 (item, reviewer, json.dumps(list(labels)), note, preferred, now))
    _end_claim(conn, item, reviewer, "labeled")
    conn.execute("UPDATE queue_items SET done = 1 WHERE id = ? AND"
                 " (SELECT count(*) FROM queue_labels WHERE item = ?) >= ?", (item, item, reviewers_per_item))
    return "ok"


def skip(conn: sqlite3.Connection, queue_id: str, item: int, reviewer: str) -> Outcome:
    outcome, _ = _held(conn, queue_id, item, reviewer)
    if outcome == "ok":
        _end_claim(conn, item, reviewer, "skipped")
    return outcome


def holds_trace(conn: sqlite3.Connection, reviewer: str, project_id: int, trace_id: str, now: int) -> bool:
    """Whether the reviewer holds a live lease on an item of one of the project's queues showing this trace."""
    return conn.execute(
        "SELECT 1 FROM queue_items AS i JOIN queues AS q ON q.id = i.queue_id WHERE q.project_id = ? AND i.holder = ?"
        " AND i.lease_expires_at > ? AND (i.a = ? OR i.b = ?) LIMIT 1",
        (project_id, reviewer, now, trace_id, trace_id)).fetchone() is not None


class QueueCounts(msgspec.Struct):
    pending: int
    leased: int
    done: int
    skipped: int
    by_strategy: dict[str, int]


def queue_counts(conn: sqlite3.Connection, queue_id: str, now: int) -> QueueCounts:
    state = (
        "CASE WHEN done THEN 'done' WHEN holder IS NOT NULL AND lease_expires_at > :now THEN 'leased'"
        " WHEN EXISTS (SELECT 1 FROM queue_claims AS c WHERE c.item = i.id AND c.outcome = 'skipped') THEN 'skipped'"
        " ELSE 'pending' END")
    counts = dict.fromkeys(("pending", "leased", "done", "skipped"), 0)
    counts.update(conn.execute(f"SELECT {state} AS state, count(*) FROM queue_items AS i WHERE queue_id = :queue"
                               " GROUP BY state", {"queue": queue_id, "now": now}).fetchall())
    by_strategy = dict(conn.execute("SELECT strategy, count(*) FROM queue_items WHERE queue_id = ? GROUP BY strategy"
                                    " ORDER BY strategy", (queue_id,)).fetchall())
    return QueueCounts(**counts, by_strategy=by_strategy)


def queue_annotations(conn: sqlite3.Connection, queue_id: str) -> list[tuple[int, str, list[str], str | None]]:
    """(item, reviewer, labels, preferred) of every label given in the queue."""
    return [(item, reviewer, json.loads(labels), preferred) for item, reviewer, labels, preferred in conn.execute(
        "SELECT l.item, l.reviewer, l.labels, l.preferred FROM queue_labels AS l JOIN queue_items AS i ON i.id = l.item"
        " WHERE i.queue_id = ? ORDER BY l.item, l.reviewer", (queue_id,))]


# --- What a fill reads ---

@dataclass(frozen=True)
class TraceFilter:
    """A queue's filter as the SQL needs it: lists (empty: any), a time range in ms, `include_flagged`."""

    since: int
    until: int
    votes: tuple[int, ...] = ()  # 1 up, 0 down
    signals: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    templates: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    include_flagged: bool = False


def flagged_sessions(conn: sqlite3.Connection, project_id: int, since: int, until: int, min_votes: int) -> list[str]:
    """The stats' outlier rule (`gateway.analytics.rates`): sessions with a current vote on at least `min_votes` traces
    in the range, all of one value."""
    return [session for (session,) in conn.execute(
        "SELECT v.session_id FROM votes AS v JOIN traces AS t ON t.row = v.trace WHERE t.project_id = ? AND t.ts >= ?"
        " AND t.ts < ? GROUP BY v.session_id HAVING count(*) >= ? AND min(v.value) = max(v.value)",
        (project_id, since, until, min_votes))]


def _in(column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
    return f"{column} IN (SELECT value FROM json_each(?))", [json.dumps(list(values))]


def _filter_sql(project_id: int, where: TraceFilter, flagged: Sequence[str], *, matching: bool
                ) -> tuple[str, list[Any]]:
    """The WHERE clause on `traces AS t` of the traces in range (and, when `matching`, matching the filter)."""
    clauses = ["t.project_id = ?", "t.ts >= ?", "t.ts < ?"]
    args: list[Any] = [project_id, where.since, where.until]
    leave_out = bool(flagged) and not where.include_flagged

    def not_flagged(session: str, clauses: list[str], args: list[Any]) -> None:
        """Add the condition that `session` (a column) is no flagged session's, when they are left out."""
        if leave_out:
            sql, more = _in(session, flagged)
            clauses.append(f"NOT {sql}")
            args += more

    not_flagged("t.session_id", clauses, args)
    if matching:
        for column, values in (("t.model", where.models), ("t.template", where.templates)):
            if values:
                sql, more = _in(column, values)
                clauses.append(sql)
                args += more
        if where.votes or where.reasons:
            vote_clauses: list[str] = ["v.trace = t.row"]
            vote_args: list[Any] = []
            for column, values in (("v.value", where.votes), ("v.reason", where.reasons)):
                if values:
                    sql, more = _in(column, values)
                    vote_clauses.append(sql)
                    vote_args += more
            not_flagged("v.session_id", vote_clauses, vote_args)
            clauses.append(f"EXISTS (SELECT 1 FROM votes AS v WHERE {' AND '.join(vote_clauses)})")
            args += vote_args
        if where.signals:
            sql, event_args = _in("e.type", where.signals)
            event_clauses = ["e.trace = t.row", sql]
            not_flagged("e.session_id", event_clauses, event_args)
            clauses.append(f"EXISTS (SELECT 1 FROM events AS e WHERE {' AND '.join(event_clauses)})")
            args += event_args
    return " AND ".join(clauses), args


class FillTrace(msgspec.Struct, array_like=True):
    trace_id: str
    input: Input | None
    output: str | None
    model: str | None
    template: str | None
    prompt_key: str | None
    ts: int


_FILL_SELECT = ("SELECT t.trace_id, t.input, t.messages, t.output, t.model, t.template, t.prompt_key, t.ts"
                " FROM traces AS t")


def _fill_trace(row: Sequence[Any]) -> FillTrace:
    return FillTrace(row[0], loaded_input(row[1], row[2]), row[3], row[4], row[5], row[6], row[7])


def matching_traces(conn: sqlite3.Connection, project_id: int, where: TraceFilter, flagged: Sequence[str],
                    limit: int) -> list[FillTrace]:
    """The newest `limit` traces matching the filter."""
    sql, args = _filter_sql(project_id, where, flagged, matching=True)
    return [_fill_trace(row) for row in conn.execute(
        f"{_FILL_SELECT} WHERE {sql} ORDER BY t.ts DESC, t.row DESC LIMIT ?", (*args, limit))]


def trace_ids_in_range(conn: sqlite3.Connection, project_id: int, where: TraceFilter, flagged: Sequence[str]
                       ) -> list[str]:
    """Every trace id in the time range, whatever the rest of the filter says: the random baseline's population."""
    sql, args = _filter_sql(project_id, where, flagged, matching=False)
    return [trace_id for (trace_id,) in conn.execute(f"SELECT t.trace_id FROM traces AS t WHERE {sql} ORDER BY t.row",
                                                     args)]


def shared_prompt_traces(conn: sqlite3.Connection, project_id: int, where: TraceFilter, flagged: Sequence[str],
                         limit: int) -> list[FillTrace]:
    """The traces in range whose prompt key another trace in range shares: what pairwise items are made of."""
    sql, args = _filter_sql(project_id, where, flagged, matching=False)
    return [_fill_trace(row) for row in conn.execute(
        f"{_FILL_SELECT} WHERE {sql} AND t.prompt_key IN (SELECT t.prompt_key FROM traces AS t WHERE {sql}"
        " AND t.prompt_key IS NOT NULL GROUP BY t.prompt_key HAVING count(*) >= 2) ORDER BY t.ts DESC, t.row DESC"
        " LIMIT ?", (*args, *args, limit))]


def queue_keys(conn: sqlite3.Connection, queue_id: str) -> list[str]:
    return [key for (key,) in conn.execute("SELECT key FROM queue_items WHERE queue_id = ?", (queue_id,))]


def labeled_texts(conn: sqlite3.Connection, project_id: int, limit: int) -> list[tuple[Input | None, str | None]]:
    """(input, output) of the traces labeled in any of the project's single queues, newest label first."""
    return [(loaded_input(text, messages), output) for text, messages, output in conn.execute(
        "SELECT t.input, t.messages, t.output FROM traces AS t WHERE t.project_id = ? AND t.trace_id IN"
        " (SELECT i.a FROM queue_items AS i JOIN queues AS q ON q.id = i.queue_id JOIN queue_labels AS l ON l.item = i.id WHERE q.project_id = ? AND i.b IS NULL"
        " ORDER BY l.created_at DESC LIMIT ?)", (project_id, project_id, limit))]


# --- Exports: rows in chunks, by keyset, so memory stays one chunk ---

class EvalRow(msgspec.Struct, array_like=True):
    row: int
    trace_id: str
    session_id: str
    input: Input | None
    output: str | None
    model: str | None
    template: str | None
    template_version: str | None
    annotations: list[tuple[str, list[str], str | None]]  # (reviewer, labels, note)
    judge: list[str]
    votes: list[tuple[str, int, str | None, str | None, int]]  # (session, value, reason, comment, updated_at)
    signals: dict[str, int]


def eval_chunk(conn: sqlite3.Connection, project_id: int, after: int, size: int, *, queue_id: str | None = None,
               since: int | None = None, until: int | None = None) -> list[EvalRow]:
    """The next `size` traces (by row, after `after`) labeled in one of the project's single queues (or in `queue_id`),
    with their labels, judge labels, votes and signal counts."""
    clauses, args = ["t.project_id = ?", "t.row > ?"], [project_id, after]
    queue_clause, queue_args = ("AND q.id = ?", [queue_id]) if queue_id is not None else ("", [])
    for clause, value in (("t.ts >= ?", since), ("t.ts < ?", until)):
        if value is not None:
            clauses.append(clause)
            args.append(value)
    rows = conn.execute(
        "SELECT t.row, t.trace_id, t.session_id, t.input, t.messages, t.output, t.model, t.template,"
        f" t.template_version FROM traces AS t WHERE {' AND '.join(clauses)} AND EXISTS (SELECT 1 FROM queue_items"
        " AS i JOIN queues AS q ON q.id = i.queue_id JOIN queue_labels AS l ON l.item = i.id WHERE i.a = t.trace_id AND i.b IS NULL"
        f" AND q.project_id = t.project_id {queue_clause}) ORDER BY t.row LIMIT ?",
        (*args, *queue_args, size)).fetchall()
    out = []
    for row, trace_id, session_id, text, messages, output, model, template, version in rows:
        annotations, judge = [], []
        for reviewer, labels, note, judged in conn.execute(
                "SELECT l.reviewer, l.labels, l.note, i.judge FROM queue_items AS i JOIN queues AS q"
                " ON q.id = i.queue_id JOIN queue_labels AS l ON l.item = i.id WHERE q.project_id = ? AND i.a = ?"
                f" AND i.b IS NULL {queue_clause} ORDER BY l.created_at, l.reviewer",
                (project_id, trace_id, *queue_args)):
            annotations.append((reviewer, json.loads(labels), note))
            if judged:
                judge += [label for label in json.loads(judged).get("labels", []) if label not in judge]
        out.append(EvalRow(row, trace_id, session_id, loaded_input(text, messages), output, model, template, version,
                           annotations, judge, _votes(conn, row), _signals(conn, row)))
    return out


def _votes(conn: sqlite3.Connection, trace_row: int) -> list[tuple[str, int, str | None, str | None, int]]:
    return conn.execute("SELECT session_id, value, reason, comment, updated_at FROM votes WHERE trace = ?"
                        " ORDER BY session_id", (trace_row,)).fetchall()


def _signals(conn: sqlite3.Connection, trace_row: int) -> dict[str, int]:
    return dict(conn.execute("SELECT type, count(DISTINCT session_id) FROM events WHERE trace = ?"
                             " AND type != 'feedback' GROUP BY type", (trace_row,)).fetchall())


class ResponseRow(msgspec.Struct, array_like=True):
    row: int
    trace_id: str
    prompt_key: str
    input: Input | None
    output: str | None
    ts: int
    votes: list[tuple[str, int, str | None, str | None, int]]


def response_chunk(conn: sqlite3.Connection, project_id: int, after: tuple[str, int], size: int, *,
                   since: int | None = None, until: int | None = None) -> list[ResponseRow]:
    """The next `size` responses by (prompt key, row) after `after` that have a vote or a pairwise judgement."""
    clauses, args = ["t.project_id = ?", "(t.prompt_key, t.row) > (?, ?)"], [project_id, *after]
    for clause, value in (("t.ts >= ?", since), ("t.ts < ?", until)):
        if value is not None:
            clauses.append(clause)
            args.append(value)
    rows = conn.execute(
        "SELECT t.row, t.trace_id, t.prompt_key, t.input, t.messages, t.output, t.ts FROM traces AS t"
        f" WHERE {' AND '.join(clauses)} AND t.prompt_key IS NOT NULL"
        " AND (EXISTS (SELECT 1 FROM votes AS v WHERE v.trace = t.row) OR EXISTS (SELECT 1 FROM queue_items AS i"
        " JOIN queue_labels AS l ON l.item = i.id WHERE i.b IS NOT NULL AND (i.a = t.trace_id OR i.b = t.trace_id)))"
        " ORDER BY t.prompt_key, t.row LIMIT ?", (*args, size)).fetchall()
    return [ResponseRow(row, trace_id, key, loaded_input(text, messages), output, ts, _votes(conn, row))
            for row, trace_id, key, text, messages, output, ts in rows]


def judgements(conn: sqlite3.Connection, project_id: int) -> Iterator[tuple[str, str, str, str]]:
    """(a, b, preferred, reviewer) of every pairwise label in the project's queues."""
    yield from conn.execute(
        "SELECT i.a, i.b, l.preferred, l.reviewer FROM queue_labels AS l JOIN queue_items AS i ON i.id = l.item"
        " JOIN queues AS q ON q.id = i.queue_id WHERE q.project_id = ? AND i.b IS NOT NULL AND l.preferred IS NOT NULL",
        (project_id,))


def count_eval_traces(conn: sqlite3.Connection, project_id: int, queue_id: str | None = None) -> int:
    """How many traces an evals export would write at most (for a progress bar)."""
    queue_clause, args = ("AND q.id = ?", [queue_id]) if queue_id is not None else ("", [])
    return conn.execute(
        "SELECT count(DISTINCT i.a) FROM queue_items AS i JOIN queues AS q ON q.id = i.queue_id"
        f" WHERE q.project_id = ? AND i.b IS NULL {queue_clause}"
        " AND EXISTS (SELECT 1 FROM queue_labels AS l WHERE l.item = i.id)", (project_id, *args)).fetchone()[0]


FillReads = tuple[list[FillTrace], list[str], list[FillTrace], list[str], list[tuple[Input | None, str | None]]]


def fill_reads(conn: sqlite3.Connection, project_id: int, queue_id: str, where: TraceFilter, pairwise: bool,
               min_votes: int, limit: int, labeled_limit: int) -> FillReads:
    """Everything a fill reads: (matching traces, trace ids in range (single queues), traces sharing a prompt
    (pairwise queues), the keys already in the queue, the newest `labeled_limit` labeled (input, output))."""
    flagged = [] if where.include_flagged else flagged_sessions(conn, project_id, where.since, where.until, min_votes)
    return (matching_traces(conn, project_id, where, flagged, limit),
            [] if pairwise else trace_ids_in_range(conn, project_id, where, flagged),
            shared_prompt_traces(conn, project_id, where, flagged, limit) if pairwise else [],
            queue_keys(conn, queue_id),
            labeled_texts(conn, project_id, labeled_limit) if labeled_limit else [])


# --- Writer jobs (`writer.py` runs them with `run`) ---

class AddReviewer(msgspec.Struct, tag="review_add_reviewer", array_like=True):
    project_id: int
    name: str
    now: int


class RevokeReviewer(msgspec.Struct, tag="review_revoke_reviewer", array_like=True):
    project_id: int
    name: str
    now: int


class SetLabels(msgspec.Struct, tag="review_set_labels", array_like=True):
    project_id: int
    labels: list[str]


class CreateQueue(msgspec.Struct, tag="review_create_queue", array_like=True):
    project_id: int
    spec: str
    now: int


class AddItems(msgspec.Struct, tag="review_add_items", array_like=True):
    queue_id: str
    items: list[NewItem]
    now: int


class Claim(msgspec.Struct, tag="review_claim", array_like=True):
    queue_id: str
    reviewer: str
    lease_ms: int
    now: int


class Label(msgspec.Struct, tag="review_label", array_like=True):
    queue_id: str
    item: int
    reviewer: str
    labels: list[str]
    note: str | None
    preferred: str | None
    reviewers_per_item: int
    now: int


class Skip(msgspec.Struct, tag="review_skip", array_like=True):
    queue_id: str
    item: int
    reviewer: str


Job = AddReviewer | RevokeReviewer | SetLabels | CreateQueue | AddItems | Claim | Label | Skip
JOBS = Job.__args__  # type: ignore[attr-defined]


def run(conn: sqlite3.Connection, job: Job) -> Any:
    """Run one job inside the caller's transaction; the result in builtins, as msgpack carries it back."""
    if isinstance(job, AddReviewer):
        return add_reviewer(conn, job.project_id, job.name, job.now)
    if isinstance(job, RevokeReviewer):
        return revoke_reviewer(conn, job.project_id, job.name, job.now)
    if isinstance(job, SetLabels):
        return set_labels(conn, job.project_id, job.labels)
    if isinstance(job, CreateQueue):
        return create_queue(conn, job.project_id, job.spec, job.now)
    if isinstance(job, AddItems):
        return add_items(conn, job.queue_id, job.items, job.now)
    if isinstance(job, Claim):
        return msgspec.to_builtins(claim(conn, job.queue_id, job.reviewer, job.lease_ms, job.now))
    if isinstance(job, Label):
        return label(conn, job.queue_id, job.item, job.reviewer, job.labels, job.note, job.preferred,
                     job.reviewers_per_item, job.now)
    return skip(conn, job.queue_id, job.item, job.reviewer)


class ReviewStore:
    """The review loop's part of a store (`store.review`): reads on the store's read connection, writes as writer
    jobs (so claims, labels and skips serialize in the writer's transactions)."""

    def __init__(self, read: Callable[..., Awaitable[Any]], write: Callable[[Job], Awaitable[Any]]) -> None:
        self._read = read
        self._write = write

    # Reviewers and labels
    async def add_reviewer(self, project_id: int, name: str, now: int) -> str | None:
        return await self._write(AddReviewer(project_id, name, now))

    async def revoke_reviewer(self, project_id: int, name: str, now: int) -> bool:
        return await self._write(RevokeReviewer(project_id, name, now))

    async def reviewer_by_key(self, key: str) -> Reviewer | None:
        return await self._read(reviewer_by_key, key)

    async def reviewer_by_id(self, reviewer_id: str) -> Reviewer | None:
        return await self._read(reviewer_by_id, reviewer_id)

    async def reviewers_of(self, project_id: int) -> list[Reviewer]:
        return await self._read(reviewers_of, project_id)

    async def labels_of(self, project_id: int) -> list[str]:
        return await self._read(labels_of, project_id)

    async def set_labels(self, project_id: int, labels: Sequence[str]) -> list[str]:
        return await self._write(SetLabels(project_id, list(labels)))

    # Queues
    async def create_queue(self, project_id: int, spec: str, now: int) -> str:
        return await self._write(CreateQueue(project_id, spec, now))

    async def queue_by_id(self, project_id: int, queue_id: str) -> QueueRow | None:
        return await self._read(queue_by_id, project_id, queue_id)

    async def queues_of(self, project_id: int | None = None) -> list[QueueRow]:
        return await self._read(queues_of, project_id)

    async def fill_reads(self, project_id: int, queue_id: str, where: TraceFilter, *, pairwise: bool, min_votes: int,
                         limit: int, labeled_limit: int) -> FillReads:
        return await self._read(fill_reads, project_id, queue_id, where, pairwise, min_votes, limit, labeled_limit)

    async def add_items(self, queue_id: str, items: list[NewItem], now: int) -> dict[str, int]:
        return await self._write(AddItems(queue_id, items, now))

    async def claim(self, queue_id: str, reviewer: str, lease_ms: int, now: int) -> Claimed | None:
        found = await self._write(Claim(queue_id, reviewer, lease_ms, now))
        return None if found is None else Claimed(*found)

    async def label(self, queue_id: str, item: int, reviewer: str, labels: Sequence[str], note: str | None,
                    preferred: str | None, reviewers_per_item: int, now: int) -> Outcome:
        return await self._write(Label(queue_id, item, reviewer, list(labels), note, preferred, reviewers_per_item,
                                       now))

    async def skip(self, queue_id: str, item: int, reviewer: str) -> Outcome:
        return await self._write(Skip(queue_id, item, reviewer))

    async def holds_trace(self, reviewer: str, project_id: int, trace_id: str, now: int) -> bool:
        return await self._read(holds_trace, reviewer, project_id, trace_id, now)

    async def queue_counts(self, queue_id: str, now: int) -> QueueCounts:
        return await self._read(queue_counts, queue_id, now)

    async def queue_annotations(self, queue_id: str) -> list[tuple[int, str, list[str], str | None]]:
        return await self._read(queue_annotations, queue_id)

    # Exports
    async def flagged_sessions(self, project_id: int, since: int, until: int, min_votes: int) -> list[str]:
        return await self._read(flagged_sessions, project_id, since, until, min_votes)

    async def eval_chunk(self, project_id: int, after: int, size: int, *, queue_id: str | None = None,
                         since: int | None = None, until: int | None = None) -> list[EvalRow]:
        return await self._read(functools.partial(eval_chunk, queue_id=queue_id, since=since, until=until),
                                project_id, after, size)

    async def response_chunk(self, project_id: int, after: tuple[str, int], size: int, *, since: int | None = None,
                             until: int | None = None) -> list[ResponseRow]:
        return await self._read(functools.partial(response_chunk, since=since, until=until), project_id, after, size)

    async def judgements(self, project_id: int) -> list[tuple[str, str, str, str]]:
        return await self._read(lambda conn, project: list(judgements(conn, project)), project_id)

    async def count_eval_traces(self, project_id: int, queue_id: str | None = None) -> int:
        return await self._read(count_eval_traces, project_id, queue_id)
