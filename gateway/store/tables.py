"""The SQLite schema and every statement on it, as plain functions of a connection: `SQLiteStore` runs the reads on
its read connection and the writes as jobs in the writer process (`writer.py`), inside one `transaction`.

Adding a table: add its `CREATE TABLE IF NOT EXISTS` to `SCHEMA`, raise `SCHEMA_VERSION` to N, and add the step from
N - 1 to `MIGRATIONS` (for tables that are only new, `_create` is that step: it creates what `SCHEMA` has and the file
lacks). Each step runs on a file of the version before it, in the one transaction that upgrades the file.

A feature whose tables follow the event log (rollups, the forwarding queues, review queues) lives in a module of its
own under `gateway/store/`, named in `FEATURES`. Such a module defines `SCHEMA` (its `CREATE ... IF NOT EXISTS`
statements, created with the base schema), and may define `upgrade_from_N(conn)`, run when a version N file is
upgraded (for version 2, after its tables were created: e.g. to backfill them from the log). None of them runs inside
the commits that store events: those stay the same whatever features follow the log.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import secrets
import sqlite3
import time
from types import ModuleType
from typing import Any, Callable, Iterator, Sequence

import msgspec

from gateway import bounds, tokens
from gateway.schemas import DEFAULT_EVENTS_PAGE, DEFAULT_REASONS, Rating, Reason, StoredEvent, TraceIn, TraceOut
from gateway.store import EventRow, KeyInfo, Project, SecretKey
from gateway.store import review, rollups

SCHEMA_VERSION = 4  # PRAGMA user_version; 0 is a new file, or the first schema (version 1, which recorded none)
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS projects (
    id INTEGER PRIMARY KEY,
    public_key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    origins TEXT NOT NULL,
    require_token INTEGER NOT NULL,
    reasons TEXT NOT NULL,
    delay_ms INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS secret_keys (
    kid TEXT PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects (id),
    secret_hash TEXT NOT NULL UNIQUE,
    token_key BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
-- `row` is how events and votes refer to a trace: an INTEGER PRIMARY KEY is the rowid itself, which VACUUM keeps.
CREATE TABLE IF NOT EXISTS traces (
    row INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    trace_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    user_id TEXT, model TEXT, template TEXT, template_version TEXT,
    input TEXT, output TEXT, metadata TEXT,
    ts INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    -- The review loop's (gateway/store/review.py): the prompt answered (a regeneration takes its parent's key), the
    -- parent, and whether `input` holds a JSON list of messages rather than text.
    prompt_key TEXT, parent_trace_id TEXT, messages INTEGER NOT NULL DEFAULT 0,
    UNIQUE (project_id, trace_id)
);
CREATE INDEX IF NOT EXISTS traces_by_prompt ON traces (project_id, prompt_key);
-- The log, in arrival order (seq). Which sessions sent each implicit signal is counted from it when a trace is read.
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    id TEXT NOT NULL,
    trace INTEGER NOT NULL REFERENCES traces (row),
    session_id TEXT NOT NULL,
    type TEXT NOT NULL,
    value INTEGER, reason TEXT, comment TEXT, props TEXT,
    ts INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    ip_hash TEXT NOT NULL,
    UNIQUE (project_id, id)
);
CREATE INDEX IF NOT EXISTS events_by_trace ON events (trace);
-- The current explicit vote per (trace, session); the event log keeps the history.
CREATE TABLE IF NOT EXISTS votes (
    trace INTEGER NOT NULL REFERENCES traces (row),
    session_id TEXT NOT NULL,
    value INTEGER NOT NULL, reason TEXT, comment TEXT,
    ts INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (trace, session_id)
) WITHOUT ROWID;
"""

_reasons_encoder = msgspec.json.Encoder()
_decode_reasons = msgspec.json.Decoder(list[Reason]).decode


def now_ms() -> int:
    return int(time.time() * 1000)


def synchronous_mode(value: str) -> str:
    """The `synchronous` pragma value for a setting, or ValueError naming the allowed ones."""
    if value.upper() not in ("FULL", "NORMAL", "EXTRA"):
        raise ValueError(f"sqlite synchronous must be FULL, NORMAL or EXTRA, not {value!r}")
    return value.upper()


def connect(path: str, *, synchronous: str = "FULL", busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), with the schema in place: created in a new file,
    migrated in an older one. A file of a newer schema version is refused (RuntimeError) and left as it is."""
    mode = synchronous_mode(synchronous)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        version = _schema_version(conn, path)  # before anything writes
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {mode}")
        conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: the indexes' hot pages stay in memory
        conn.execute("PRAGMA temp_store = MEMORY")
        if version != SCHEMA_VERSION:
            _install_schema(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: BEGIN IMMEDIATE, then COMMIT, or ROLLBACK (and re-raise) on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _schema_version(conn: sqlite3.Connection, path: str) -> int:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if not 0 <= version <= SCHEMA_VERSION:
        raise RuntimeError(f"{path} has schema version {version}, which this Backchannel does not know (it uses"
                           f" version {SCHEMA_VERSION}); was it written by a newer release?")
    return version


def _install_schema(conn: sqlite3.Connection, path: str) -> None:
    """Create the schema in a new file, or upgrade an older one step by step: in one transaction, all or nothing."""
    with transaction(conn):
        # Again under the write lock: another process (the writer, a CLI command) may have just done it.
        version = _schema_version(conn, path)
        if version == SCHEMA_VERSION:
            return
        if version == 0:
            traces = [column for _, column, *_ in conn.execute("PRAGMA table_info(traces)")]
            if "row" in traces:
                raise RuntimeError(f"{path} has schema version 0 but its traces table is not the first schema's")
            version = 1 if traces else SCHEMA_VERSION
            if not traces:
                _create(conn)
        for step in range(version, SCHEMA_VERSION):
            try:
                MIGRATIONS[step](conn)
            except sqlite3.Error as exc:
                raise RuntimeError(f"could not migrate {path} to schema version {SCHEMA_VERSION}, so it is left as it"
                                   f" was: {exc}") from exc
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


FEATURES: tuple[str, ...] = (
    "gateway.store.rollups",
    "gateway.store.alerts",
    "gateway.store.outbox",
    "gateway.store.salts",
    "gateway.store.repairs",
    "gateway.store.review",
)
"""Modules under gateway/store/ whose tables follow the event log (see the module docstring)."""


@functools.cache
def features() -> tuple[ModuleType, ...]:
    # Imported on first use, not at the top: a feature module may use this one's helpers.
    return tuple(importlib.import_module(name) for name in FEATURES)


def _run_schema(conn: sqlite3.Connection, schema: str) -> None:
    # One statement at a time: executescript would first COMMIT the transaction they belong to.
    statement = ""
    for line in schema.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            conn.execute(statement)
            statement = ""


def _create(conn: sqlite3.Connection) -> None:
    _run_schema(conn, SCHEMA)
    for module in features():
        _run_schema(conn, module.SCHEMA)


def _upgrade_from_3(conn: sqlite3.Connection) -> None:
    """Version 4: whatever each feature's `upgrade_from_3` does (forwarding: queues behind a cursor)."""
    for module in features():
        if hasattr(module, "upgrade_from_3"):
            module.upgrade_from_3(conn)


def _upgrade_from_2(conn: sqlite3.Connection) -> None:
    """Version 3 adds the features' tables (and whatever each feature's `upgrade_from_2` does)."""
    _create(conn)
    for module in features():
        if hasattr(module, "upgrade_from_2"):
            module.upgrade_from_2(conn)


_TRACE_COLUMNS = ("project_id, trace_id, session_id, user_id, model, template, template_version, input, output,"
                  " metadata, ts, created_at, updated_at")


def _migrate_from_text_trace_ids(conn: sqlite3.Connection) -> None:
    """The first schema keyed events, votes and signals by the text trace id; now they hold the trace's integer row,
    and signals are counted from the event log. Runs inside `_install_schema`'s transaction."""
    for table in ("traces", "events", "votes"):
        conn.execute(f"ALTER TABLE {table} RENAME TO old_{table}")
    conn.execute("DROP INDEX events_by_trace")  # it went along to old_events; the new index takes its name
    _create(conn)
    conn.execute(f"INSERT INTO traces ({_TRACE_COLUMNS}) SELECT {_TRACE_COLUMNS} FROM old_traces ORDER BY rowid")
    # A row without a trace (which the first schema allowed) fails the NOT NULL on `trace`, and so the migration.
    conn.execute(
        "INSERT INTO events (seq, project_id, id, trace, session_id, type, value, reason, comment, props, ts,"
        " received_at, ip_hash) SELECT e.seq, e.project_id, e.id, t.row, e.session_id, e.type, e.value, e.reason,"
        " e.comment, e.props, e.ts, e.received_at, e.ip_hash FROM old_events AS e"
        " LEFT JOIN traces AS t USING (project_id, trace_id) ORDER BY e.seq")
    conn.execute(
        "INSERT INTO votes (trace, session_id, value, reason, comment, ts, updated_at)"
        " SELECT t.row, v.session_id, v.value, v.reason, v.comment, v.ts, v.updated_at FROM old_votes AS v"
        " LEFT JOIN traces AS t USING (project_id, trace_id)")
    for table in ("old_traces", "old_events", "old_votes", "signals"):
        conn.execute(f"DROP TABLE {table}")


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _migrate_from_text_trace_ids,  # to 2
    2: _upgrade_from_2,  # to 3
    3: _upgrade_from_3,  # to 4
}
"""Version N -> the step that brings a file from N to N + 1."""


# --- Write jobs: plain functions of a connection, run inside the writer's transaction (or the CLI's). ---

def create_project(conn: sqlite3.Connection, *, name: str, origins: Sequence[str], require_token: bool = True,
                   reasons: Sequence[Reason] | None = None, delay_ms: int = 2000) -> tuple[Project, str]:
    """Create a project with one secret key; returns the project and the secret key (shown once, stored hashed)."""
    public_key = "pk_" + secrets.token_urlsafe(16)
    reasons = tuple(reasons or (Reason(code, label) for code, label in DEFAULT_REASONS))
    origins = tuple(o.rstrip("/") for o in origins)
    created = now_ms()
    cur = conn.execute(
        "INSERT INTO projects (public_key, name, origins, require_token, reasons, delay_ms, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (public_key, name, json.dumps(origins), int(require_token), _reasons_encoder.encode(list(reasons)).decode(),
         delay_ms, created),
    )
    project = Project(cur.lastrowid, public_key, name, origins, require_token, reasons, delay_ms, created)
    return project, add_secret_key(conn, project.id)


def add_secret_key(conn: sqlite3.Connection, project_id: int) -> str:
    secret = "sk_" + secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO secret_keys (kid, project_id, secret_hash, token_key, created_at) VALUES (?, ?, ?, ?, ?)",
        (tokens.key_id(secret), project_id, tokens.secret_hash(secret), tokens.token_key(secret), now_ms()),
    )
    return secret


def revoke_secret_key(conn: sqlite3.Connection, project_id: int, kid: str) -> bool:
    """Revoke one key; its tokens and its bearer use stop working. False if the project has no such live key."""
    return conn.execute("UPDATE secret_keys SET revoked_at = ? WHERE project_id = ? AND kid = ? AND revoked_at IS NULL",
                        (now_ms(), project_id, kid)).rowcount == 1


def upsert_trace(conn: sqlite3.Connection, project_id: int, trace: TraceIn) -> bool:
    now = now_ms()
    metadata = json.dumps(trace.metadata) if trace.metadata is not None else None
    existed = conn.execute("SELECT 1 FROM traces WHERE project_id = ? AND trace_id = ?",
                           (project_id, trace.trace_id)).fetchone()
    conn.execute(
        "INSERT INTO traces (project_id, trace_id, session_id, user_id, model, template, template_version, input,"
        " output, metadata, ts, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (project_id, trace_id) DO UPDATE SET session_id = excluded.session_id,"
        " user_id = excluded.user_id, model = excluded.model, template = excluded.template,"
        " template_version = excluded.template_version, input = excluded.input, output = excluded.output,"
        " metadata = excluded.metadata, ts = excluded.ts, updated_at = excluded.updated_at",
        (project_id, trace.trace_id, trace.session_id, trace.user_id, trace.model, trace.template,
         trace.template_version, review.stored_input(trace), trace.output, metadata,
         trace.ts if trace.ts is not None else now, now, now),
    )
    review.record_prompt(conn, project_id, trace)
    if existed is not None:  # its impressions count where its model, template and ts now say
        rollups.retrace(conn, project_id, trace.trace_id)
    return existed is None


_encode_json = msgspec.json.Encoder().encode

# Two inserts: implicit signals leave value, reason and comment out rather than binding None to them (the sqlite3
# module looks for an adapter for every None it binds), so `seq` is given explicitly to keep the log in arrival order.
# ON CONFLICT DO NOTHING lets the unique constraint turn duplicates away (the store's verdict in gateway/dedup.py).
_INSERT_FEEDBACK = (
    "INSERT INTO events (seq, project_id, id, trace, session_id, type, value, reason, comment, props, ts, received_at,"
    " ip_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
_INSERT_SIGNALS = (
    "INSERT INTO events (seq, project_id, id, trace, session_id, type, props, ts, received_at, ip_hash)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
_LAST_SEQ = "SELECT coalesce(max(seq), 0) FROM events"
# Newest vote wins by client time, so a late retry of an older click cannot undo a newer one.
_UPSERT_VOTES = (
    "INSERT INTO votes (trace, session_id, value, reason, comment, ts, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (trace, session_id) DO UPDATE SET value = excluded.value, reason = excluded.reason,"
    " comment = excluded.comment, ts = excluded.ts, updated_at = excluded.updated_at WHERE excluded.ts >= votes.ts")
_TRACE_ROWS = "SELECT row, trace_id FROM traces WHERE project_id = ? AND trace_id IN (SELECT value FROM json_each(?))"


def insert_event_batches(conn: sqlite3.Connection, batches: Sequence[tuple[int, Sequence[EventRow[str]]]],
                          known_traces: dict[tuple[int, str], int]) -> list[list[str]]:
    """Insert many requests' events at once; per request, per row: "accepted", "duplicate" or "unknown_trace".

    `known_traces` maps (project_id, trace_id) to the trace's row: a cache the caller keeps across commits, to which
    this adds the traces it looks up. Runs inside the writer's IMMEDIATE transaction, so no other process writes
    meanwhile. Ids are not looked up first: the unique constraint turns a stored id (or one earlier in this commit)
    away, and only when fewer rows went in than were sent (a retry, mostly) is it worked out which.
    """
    received = now_ms()
    unknown: dict[int, set[str]] = {}
    for project_id, rows in batches:
        for row in rows:
            if (project_id, row.trace_id) not in known_traces:
                unknown.setdefault(project_id, set()).add(row.trace_id)
    for project_id, trace_ids in unknown.items():
        known_traces.update(((project_id, trace_id), trace) for trace, trace_id in conn.execute(
            _TRACE_ROWS, (project_id, _encode_json(sorted(trace_ids)))))

    first = seq = conn.execute(_LAST_SEQ).fetchone()[0]  # stable: the transaction holds the write lock
    feedback, signals, votes, outcomes = [], [], [], []
    for project_id, rows in batches:
        outcome = []
        for row in rows:
            trace = known_traces.get((project_id, row.trace_id))
            if trace is None:
                outcome.append("unknown_trace")
                continue
            outcome.append("accepted")
            seq += 1
            if row.type == "feedback":
                feedback.append((seq, project_id, row.id, trace, row.session_id, row.type, row.value, row.reason,
                                 row.comment, row.props, row.ts, received, row.ip_hash))
                votes.append((seq, (trace, row.session_id, row.value, row.reason, row.comment, row.ts, received)))
            else:
                signals.append((seq, project_id, row.id, trace, row.session_id, row.type, row.props, row.ts,
                                received, row.ip_hash))
        outcomes.append(outcome)
    went_in = 0
    for sql, rows in ((_INSERT_FEEDBACK, feedback), (_INSERT_SIGNALS, signals)):
        if rows:
            went_in += conn.executemany(sql, rows).rowcount
    inserted = None  # None: every row went in
    if went_in < seq - first:
        inserted = {s for (s,) in conn.execute("SELECT seq FROM events WHERE seq > ?", (first,))}
        seq = first
        for outcome in outcomes:  # the same walk as above, so each row meets its own seq again
            for i, status in enumerate(outcome):
                if status == "accepted":
                    seq += 1
                    if seq not in inserted:
                        outcome[i] = "duplicate"
    # Only a vote that went in counts: a duplicate click must not overwrite a newer one with its older values.
    vote_rows = [vote for vote_seq, vote in votes if inserted is None or vote_seq in inserted]
    if vote_rows:
        conn.executemany(_UPSERT_VOTES, vote_rows)
    return outcomes


def meta(conn: sqlite3.Connection, name: str, default: str) -> str:
    """The stored value of `name`, storing `default` first if there is none."""
    conn.execute("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING", (name, default))
    return conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()[0]


# --- Reads ---

def ping(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1").fetchone() == (1,)


PROJECT_SELECT = "SELECT id, public_key, name, origins, require_token, reasons, delay_ms, created_at FROM projects"
_KEY_SELECT = "SELECT kid, project_id, token_key, revoked_at FROM secret_keys"


def project_from_row(row: Sequence[Any]) -> Project:
    return Project(row[0], row[1], row[2], tuple(json.loads(row[3])), bool(row[4]), tuple(_decode_reasons(row[5])),
                   row[6], row[7])


def list_projects(conn: sqlite3.Connection) -> list[Project]:
    return [project_from_row(row) for row in conn.execute(PROJECT_SELECT + " ORDER BY id")]


def project_by_public_key(conn: sqlite3.Connection, public_key: str) -> Project | None:
    row = conn.execute(PROJECT_SELECT + " WHERE public_key = ?", (public_key,)).fetchone()
    return project_from_row(row) if row else None


def project_by_id(conn: sqlite3.Connection, project_id: int) -> Project | None:
    row = conn.execute(PROJECT_SELECT + " WHERE id = ?", (project_id,)).fetchone()
    return project_from_row(row) if row else None


def _key_from_row(row: Sequence[Any] | None) -> SecretKey | None:
    return SecretKey(row[0], row[1], row[2], row[3] is not None) if row else None


def key_by_secret(conn: sqlite3.Connection, secret_key: str) -> SecretKey | None:
    return _key_from_row(conn.execute(_KEY_SELECT + " WHERE secret_hash = ?",
                                      (tokens.secret_hash(secret_key),)).fetchone())


def key_by_kid(conn: sqlite3.Connection, kid: str) -> SecretKey | None:
    return _key_from_row(conn.execute(_KEY_SELECT + " WHERE kid = ?", (kid,)).fetchone())


def keys_of(conn: sqlite3.Connection, project_id: int) -> list[KeyInfo]:
    return [KeyInfo(*row) for row in conn.execute(
        "SELECT kid, created_at, revoked_at FROM secret_keys WHERE project_id = ? ORDER BY created_at", (project_id,))]


def get_trace(conn: sqlite3.Connection, project_id: int, trace_id: str, *, after: str | None = None,
              limit: int = DEFAULT_EVENTS_PAGE) -> TraceOut | None:
    """The trace with a page of its events: at most `limit`, those logged after the event `after` (ValueError if
    that is not one of the trace's events), and `next_after` if more follow; its rating and signals whole."""
    row = conn.execute(
        "SELECT row, trace_id, session_id, user_id, model, template, template_version, input, output, metadata, ts,"
        " messages, parent_trace_id FROM traces WHERE project_id = ? AND trace_id = ?", (project_id, trace_id)).fetchone()
    if row is None:
        return None
    trace = (row[0],)
    start = 0
    if after is not None:
        found = conn.execute("SELECT seq FROM events WHERE project_id = ? AND id = ? AND trace = ?",
                             (project_id, after, row[0])).fetchone()
        if found is None:
            raise ValueError("`after` is not an event of this trace")
        start = found[0]
    events = [
        StoredEvent(id=r[0], type=r[1], session_id=r[2], ts=r[3], received_at=r[4], value=r[5], reason=r[6],
                    comment=r[7], **(json.loads(r[8]) if r[8] else {}))
        for r in conn.execute("SELECT id, type, session_id, ts, received_at, value, reason, comment, props FROM events"
                              " WHERE trace = ? AND seq > ? ORDER BY seq LIMIT ?", (row[0], start, limit + 1))
    ]
    next_after = None
    if len(events) > limit:
        del events[limit:]
        next_after = events[-1].id
    rating = [Rating(*r) for r in conn.execute(
        "SELECT session_id, value, reason, comment, updated_at FROM votes WHERE trace = ? ORDER BY session_id", trace)]
    # Sessions per implicit signal type: repeats in one session count once.
    signals = dict(conn.execute(
        "SELECT type, count(DISTINCT session_id) FROM events WHERE trace = ? AND type != 'feedback' GROUP BY type",
        trace).fetchall())
    return TraceOut(trace_id=row[1], session_id=row[2], user_id=row[3], model=row[4], template=row[5],
                    template_version=row[6], input=review.loaded_input(row[7], row[11]), output=row[8],
                    metadata=_stored_metadata(row[9]), ts=row[10], events=events, rating=rating,
                    signals=signals, parent_trace_id=row[12], next_after=next_after)


def _stored_metadata(text: str | None) -> dict[str, Any] | None:
    # Metadata stored before it was bounded may nest too deep to decode (RecursionError) or encode: read as null.
    if not text or bounds.nesting_exceeds(text.encode(), bounds.MAX_BODY_DEPTH):
        return None
    return json.loads(text)
