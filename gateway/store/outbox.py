"""Forwarding's tables: destinations (credentials sealed by `gateway.forwarding.crypto.Vault`), their queues, dead
records and the delivery lease, as plain functions of a connection.

A destination's queue is the event log itself: each destination keeps a cursor (the last event seq it was handed), and
every event after it of a type the destination wants is queued. So an event is queued if and only if it is stored, by
the very commit that stores it, and storing one costs the commit nothing. Only what needs more than one pass gets a row
in `outbox`, written as the cursor moves past it (`record_outcomes`): a record to retry, or one held back behind its
trace's waiting retry. A delivered record leaves nothing but its destination's `delivered` count; a dead one moves to
`outbox_dead` with the refusal kept for the operator. Every row's seq is at most its destination's cursor, so a
destination's queue in commit order is its rows, then the log after its cursor (`pending`).
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from gateway.forwarding import OutboxRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS destinations (
    id TEXT PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects (id),
    kind TEXT NOT NULL,
    url TEXT NOT NULL,
    signals TEXT NOT NULL,
    credentials BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    cursor INTEGER NOT NULL DEFAULT 0,  -- the last event seq it was handed (see the module docstring)
    delivered INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_error_at INTEGER
);
-- Which events a destination wants: one row per (project, signal type, destination that wants it).
CREATE TABLE IF NOT EXISTS destination_signals (
    project_id INTEGER NOT NULL,
    type TEXT NOT NULL,
    destination TEXT NOT NULL,
    PRIMARY KEY (project_id, type, destination)
) WITHOUT ROWID;
-- The records that need more than one pass (see the module docstring). `seq` is the event's; `next_try_at` (unix
-- seconds) 0 until the first failure.
CREATE TABLE IF NOT EXISTS outbox (
    destination TEXT NOT NULL,
    seq INTEGER NOT NULL,
    superseded INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    first_try_at REAL,
    next_try_at REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (destination, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox_dead (
    destination TEXT NOT NULL,
    seq INTEGER NOT NULL,
    superseded INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    error TEXT NOT NULL,
    body TEXT NOT NULL,
    dead_at INTEGER NOT NULL,
    PRIMARY KEY (destination, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at REAL NOT NULL);
"""

DELIVERY_LEASE = "forwarding"


@dataclass(frozen=True)
class StoredDestination:
    """A destination as stored; `credentials` stay sealed until the worker opens them."""

    id: str
    project_id: int
    public_key: str  # the project's
    kind: str
    url: str
    signals: tuple[str, ...]
    credentials: bytes
    created_at: int

    def __repr__(self) -> str:
        return f"StoredDestination({self.id!r}, {self.kind!r})"


@dataclass(frozen=True)
class DestinationCounts:
    """What `GET /v1/destinations/{id}` shows of its delivery (in flight is the worker's, not the store's)."""

    queued: int
    delivered: int
    dead: int
    last_error: str | None
    last_error_at: int | None
    oldest_queued_at: int | None  # ms: when the oldest queued record's event was received


@dataclass(frozen=True)
class Pending:
    """A queued record with its retry state."""

    record: OutboxRecord
    trace: int  # the trace's row: records of one trace go out in seq order
    attempts: int
    first_try_at: float | None
    next_try_at: float


@dataclass(frozen=True)
class Window:
    """The start of a destination's queue (`pending`): `records` in commit order, and how far the log was read for
    them: every record the destination wants up to `end` is in `records`, so once they are dealt with its cursor may
    move from `cursor` to `end` (`Outcomes.upto`)."""

    records: list[Pending]
    cursor: int
    end: int


# --- The writer's jobs (each an `Op` of gateway/store/writer.py, run by `run`) ---

class Retried(msgspec.Struct, array_like=True):
    seq: int
    attempts: int
    first_try_at: float
    next_try_at: float


class Parked(msgspec.Struct, array_like=True):
    seq: int
    attempts: int
    error: str
    body: str


class Outcomes(msgspec.Struct, tag="outbox_outcomes", array_like=True):
    """One delivery round of one destination, as the writer records it. `upto`: where its cursor moves (at most its
    window's `end`); what it passes over and was not delivered gets a row."""

    destination: str
    delivered: list[int]
    retried: list[Retried]
    dead: list[Parked]
    last_error: str | None
    upto: int = 0


class AddDestination(msgspec.Struct, tag="outbox_add", array_like=True):
    project_id: int
    kind: str
    url: str
    signals: list[str]
    credentials: bytes  # sealed

    def __repr__(self) -> str:
        return f"AddDestination({self.project_id}, {self.kind!r})"


class RemoveDestination(msgspec.Struct, tag="outbox_remove", array_like=True):
    project_id: int
    destination: str


class RetryDead(msgspec.Struct, tag="outbox_retry_dead", array_like=True):
    project_id: int
    destination: str


class TakeLease(msgspec.Struct, tag="outbox_take_lease", array_like=True):
    holder: str
    ttl: float


class DropLease(msgspec.Struct, tag="outbox_drop_lease", array_like=True):
    holder: str


Job = AddDestination | RemoveDestination | RetryDead | Outcomes | TakeLease | DropLease
JOBS = Job.__args__  # type: ignore[attr-defined]


def run(conn: sqlite3.Connection, job: Job) -> Any:
    """Run one job inside the writer's transaction."""
    if isinstance(job, AddDestination):
        return add_destination(conn, job.project_id, job.kind, job.url, job.signals, job.credentials)
    if isinstance(job, RemoveDestination):
        return remove_destination(conn, job.project_id, job.destination)
    if isinstance(job, RetryDead):
        return retry_dead(conn, job.project_id, job.destination)
    if isinstance(job, Outcomes):
        return record_outcomes(conn, job)
    if isinstance(job, TakeLease):
        return take_lease(conn, DELIVERY_LEASE, job.holder, job.ttl)
    return drop_lease(conn, DELIVERY_LEASE, job.holder)


def _now_ms() -> int:
    return int(time.time() * 1000)


# A vote older (by client time) than the session's current vote is superseded: a log entry, not the vote.
_SUPERSEDED = ("coalesce(e.type = 'feedback' AND e.ts < (SELECT v.ts FROM votes AS v"
               " WHERE v.trace = e.trace AND v.session_id = e.session_id), 0)")
# The events after a seq of the types a destination wants (bound: the destination, then the seq).
_WANTED = ("FROM events AS e JOIN destination_signals AS s ON s.project_id = e.project_id AND s.type = e.type"
           " AND s.destination = ? WHERE e.seq > ?")
_LAST_SEQ = "SELECT coalesce(max(seq), 0) FROM events"


# --- Write jobs ---

def add_destination(conn: sqlite3.Connection, project_id: int, kind: str, url: str, signals: Sequence[str],
                    credentials: bytes) -> str:
    """The new destination's id. It receives events committed from now on."""
    destination = "dst_" + secrets.token_urlsafe(12)
    conn.execute("INSERT INTO destinations (id, project_id, kind, url, signals, credentials, created_at, cursor)"
                 f" VALUES (?, ?, ?, ?, ?, ?, ?, ({_LAST_SEQ}))",
                 (destination, project_id, kind, url, ",".join(signals), credentials, _now_ms()))
    conn.executemany("INSERT INTO destination_signals (project_id, type, destination) VALUES (?, ?, ?)",
                     [(project_id, signal, destination) for signal in signals])
    return destination


def remove_destination(conn: sqlite3.Connection, project_id: int, destination: str) -> bool:
    """Remove it with everything queued for it; False if the project has no such destination."""
    if conn.execute("DELETE FROM destinations WHERE id = ? AND project_id = ?",
                    (destination, project_id)).rowcount != 1:
        return False
    for table in ("destination_signals", "outbox", "outbox_dead"):
        conn.execute(f"DELETE FROM {table} WHERE destination = ?", (destination,))
    return True


def retry_dead(conn: sqlite3.Connection, project_id: int, destination: str) -> int:
    """Requeue the destination's dead records (as new: attempts start over); how many (-1: no such destination)."""
    if conn.execute("SELECT 1 FROM destinations WHERE id = ? AND project_id = ?",
                    (destination, project_id)).fetchone() is None:
        return -1
    moved = conn.execute("INSERT OR IGNORE INTO outbox (destination, seq, superseded) SELECT destination, seq,"
                         " superseded FROM outbox_dead WHERE destination = ?", (destination,)).rowcount
    conn.execute("DELETE FROM outbox_dead WHERE destination = ?", (destination,))
    return moved


# One statement for a round's delivered rows (a batch is up to a destination's `max_batch` of them).
_DELETE_DELIVERED = "DELETE FROM outbox WHERE destination = ? AND seq IN (SELECT value FROM json_each(?))"
# The records the cursor moves past (bound: destination, cursor, upto, the delivered seqs) that were not delivered.
_PASSED = (f"INSERT OR IGNORE INTO outbox (destination, seq, superseded) SELECT s.destination, e.seq, {_SUPERSEDED}"
           f" {_WANTED} AND e.seq <= ? AND e.seq NOT IN (SELECT value FROM json_each(?))")
_encode_json = msgspec.json.Encoder().encode


def record_outcomes(conn: sqlite3.Connection, outcomes: Outcomes) -> None:
    """Apply one delivery round: move the cursor (what it passes and was not delivered gets a row), delete delivered
    rows and count every delivered record, reschedule retries, park the dead."""
    destination = outcomes.destination
    cursor = _cursor(conn, destination)
    if cursor is None:  # removed meanwhile, with its queue
        return
    delivered_seqs = _encode_json(outcomes.delivered)
    delivered = 0
    if outcomes.upto > cursor:
        conn.execute(_PASSED, (destination, cursor, outcomes.upto, delivered_seqs))
        conn.execute("UPDATE destinations SET cursor = ? WHERE id = ?", (outcomes.upto, destination))
        delivered = sum(1 for seq in outcomes.delivered if cursor < seq <= outcomes.upto)
    if outcomes.delivered:
        delivered += conn.execute(_DELETE_DELIVERED, (destination, delivered_seqs)).rowcount
    conn.executemany("UPDATE outbox SET attempts = ?, first_try_at = ?, next_try_at = ? WHERE destination = ?"
                     " AND seq = ?", [(r.attempts, r.first_try_at, r.next_try_at, destination, r.seq)
                                      for r in outcomes.retried])
    now = _now_ms()
    for dead in outcomes.dead:
        moved = conn.execute("INSERT OR REPLACE INTO outbox_dead (destination, seq, superseded, attempts, error, body,"
                             " dead_at) SELECT destination, seq, superseded, ?, ?, ?, ? FROM outbox"
                             " WHERE destination = ? AND seq = ?",
                             (dead.attempts, dead.error, dead.body, now, destination, dead.seq)).rowcount
        if moved:
            conn.execute("DELETE FROM outbox WHERE destination = ? AND seq = ?", (destination, dead.seq))
    if delivered or outcomes.last_error is not None:
        conn.execute("UPDATE destinations SET delivered = delivered + ?, last_error = coalesce(?, last_error),"
                     " last_error_at = CASE WHEN ? IS NULL THEN last_error_at ELSE ? END WHERE id = ?",
                     (delivered, outcomes.last_error, outcomes.last_error, now, destination))


def take_lease(conn: sqlite3.Connection, name: str, holder: str, ttl: float) -> bool:
    """Take or renew the lease `name` for `ttl` seconds: True if `holder` has it now."""
    now = time.time()
    conn.execute("INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE"
                 " SET holder = excluded.holder, expires_at = excluded.expires_at"
                 " WHERE leases.holder = excluded.holder OR leases.expires_at < ?", (name, holder, now + ttl, now))
    return conn.execute("SELECT holder FROM leases WHERE name = ?", (name,)).fetchone()[0] == holder


def drop_lease(conn: sqlite3.Connection, name: str, holder: str) -> None:
    conn.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))


# --- Reads ---

_DESTINATION_SELECT = ("SELECT d.id, d.project_id, p.public_key, d.kind, d.url, d.signals, d.credentials, d.created_at"
                       " FROM destinations AS d JOIN projects AS p ON p.id = d.project_id")


def _destination(row: Sequence[Any]) -> StoredDestination:
    return StoredDestination(row[0], row[1], row[2], row[3], row[4], tuple(row[5].split(",")), row[6], row[7])


def destinations(conn: sqlite3.Connection, project_id: int | None = None) -> list[StoredDestination]:
    """A project's destinations (every project's without one), oldest first."""
    if project_id is None:
        rows = conn.execute(_DESTINATION_SELECT + " ORDER BY d.created_at, d.id")
    else:
        rows = conn.execute(_DESTINATION_SELECT + " WHERE d.project_id = ? ORDER BY d.created_at, d.id", (project_id,))
    return [_destination(row) for row in rows]


def destination(conn: sqlite3.Connection, project_id: int | None, destination_id: str) -> StoredDestination | None:
    """The destination `destination_id` if it is the project's (any project's, with None)."""
    row = conn.execute(_DESTINATION_SELECT + " WHERE d.id = ? AND d.project_id = coalesce(?, d.project_id)",
                       (destination_id, project_id)).fetchone()
    return _destination(row) if row else None


def any_destination(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM destinations LIMIT 1").fetchone() is not None


def _cursor(conn: sqlite3.Connection, destination_id: str) -> int | None:
    found = conn.execute("SELECT cursor FROM destinations WHERE id = ?", (destination_id,)).fetchone()
    return None if found is None else found[0]


def counts(conn: sqlite3.Connection, destination_id: str) -> DestinationCounts | None:
    """None if there is no such destination (it may have been removed since it was listed)."""
    found = conn.execute("SELECT cursor, delivered, last_error, last_error_at FROM destinations WHERE id = ?",
                         (destination_id,)).fetchone()
    if found is None:
        return None
    cursor, delivered, last_error, last_error_at = found
    rows, oldest_seq = conn.execute("SELECT count(*), min(seq) FROM outbox WHERE destination = ?",
                                    (destination_id,)).fetchone()
    in_log, oldest_in_log = conn.execute(f"SELECT count(*), min(e.seq) {_WANTED}", (destination_id, cursor)).fetchone()
    queued = rows + in_log
    oldest_seq = oldest_in_log if oldest_seq is None else oldest_seq  # every row is before the cursor
    (dead,) = conn.execute("SELECT count(*) FROM outbox_dead WHERE destination = ?", (destination_id,)).fetchone()
    oldest = None
    if oldest_seq is not None:
        (oldest,) = conn.execute("SELECT received_at FROM events WHERE seq = ?", (oldest_seq,)).fetchone()
    return DestinationCounts(queued, delivered, dead, last_error, last_error_at, oldest)


def dead_records(conn: sqlite3.Connection, destination_id: str, limit: int = 20) -> list[dict[str, Any]]:
    """The newest dead records of a destination, with why (for the operator)."""
    return [{"event_id": row[0], "attempts": row[1], "error": row[2], "body": row[3], "dead_at": row[4]}
            for row in conn.execute(
                "SELECT e.id, d.attempts, d.error, d.body, d.dead_at FROM outbox_dead AS d JOIN events AS e"
                " ON e.seq = d.seq WHERE d.destination = ? ORDER BY d.seq DESC LIMIT ?", (destination_id, limit))]


_decode_props = msgspec.json.Decoder(dict[str, Any]).decode
_RECORD = ("e.seq, e.id, p.public_key, t.trace_id, e.session_id, e.type, e.ts, t.user_id, t.model, t.template,"
           " e.value, e.reason, e.comment, e.props")
_JOIN_RECORD = " JOIN traces AS t ON t.row = e.trace JOIN projects AS p ON p.id = e.project_id"
_ROWS_SELECT = (f"SELECT {_RECORD}, o.superseded, e.trace, o.attempts, o.first_try_at, o.next_try_at FROM outbox AS o"
                f" JOIN events AS e ON e.seq = o.seq{_JOIN_RECORD} WHERE o.destination = ? ORDER BY o.seq LIMIT ?")
_LOG_SELECT = (f"SELECT {_RECORD}, {_SUPERSEDED}, e.trace, 0, NULL, 0 FROM events AS e JOIN destination_signals AS s"
               f" ON s.project_id = e.project_id AND s.type = e.type AND s.destination = ?{_JOIN_RECORD}"
               " WHERE e.seq > ? AND e.seq <= ? ORDER BY e.seq LIMIT ?")


def _pending(r: Sequence[Any]) -> Pending:
    return Pending(OutboxRecord(seq=r[0], event_id=r[1], project=r[2], trace_id=r[3], session_id=r[4], type=r[5],
                                ts=r[6], user_id=r[7], model=r[8], template=r[9], value=r[10], reason=r[11],
                                comment=r[12], props=_decode_props(r[13]) if r[13] else {}, superseded=bool(r[14])),
                   r[15], r[16], r[17], r[18])


def pending(conn: sqlite3.Connection, destination_id: str, limit: int) -> Window:
    """The destination's first `limit` queued records in commit order, due or not (the worker decides): its rows,
    then the log after its cursor."""
    cursor = _cursor(conn, destination_id)
    if cursor is None:
        return Window([], 0, 0)
    last = conn.execute(_LAST_SEQ).fetchone()[0]  # first: the log is read up to it, so `end` holds in any snapshot
    records = [_pending(r) for r in conn.execute(_ROWS_SELECT, (destination_id, limit))]
    room = limit - len(records)
    if not room:
        return Window(records, cursor, cursor)
    log = [_pending(r) for r in conn.execute(_LOG_SELECT, (destination_id, cursor, last, room))]
    return Window(records + log, cursor, last if len(log) < room else log[-1].record.seq)


class Outbox:
    """Forwarding's part of a store (`store.outbox`): reads on the store's read connection, writes as writer jobs."""

    def __init__(self, read: Callable[..., Awaitable[Any]], write: Callable[[Job], Awaitable[Any]]) -> None:
        self._read = read
        self._write = write

    async def add(self, project_id: int, kind: str, url: str, signals: Sequence[str], credentials: bytes) -> str:
        return await self._write(AddDestination(project_id, kind, url, list(signals), credentials))

    async def remove(self, project_id: int, destination_id: str) -> bool:
        return await self._write(RemoveDestination(project_id, destination_id))

    async def retry_dead(self, project_id: int, destination_id: str) -> int:
        return await self._write(RetryDead(project_id, destination_id))

    async def record_outcomes(self, outcomes: Outcomes) -> None:
        await self._write(outcomes)

    async def take_lease(self, holder: str, ttl: float) -> bool:
        return await self._write(TakeLease(holder, ttl))

    async def drop_lease(self, holder: str) -> None:
        await self._write(DropLease(holder))

    async def destinations(self, project_id: int | None = None) -> list[StoredDestination]:
        return await self._read(destinations, project_id)

    async def destination(self, project_id: int | None, destination_id: str) -> StoredDestination | None:
        return await self._read(destination, project_id, destination_id)

    async def any(self) -> bool:
        return await self._read(any_destination)

    async def counts(self, destination_id: str) -> DestinationCounts | None:
        return await self._read(counts, destination_id)

    async def dead_records(self, destination_id: str) -> list[dict[str, Any]]:
        return await self._read(dead_records, destination_id)

    async def pending(self, destination_id: str, limit: int) -> Window:
        return await self._read(pending, destination_id, limit)


def upgrade_from_3(conn: sqlite3.Connection) -> None:
    """Version 4 queues from the log behind each destination's cursor: the rows queued before stay, and the cursor
    starts after them (a file upgraded from version 2 has its tables created with the column already)."""
    if "cursor" not in [column for _, column, *_ in conn.execute("PRAGMA table_info(destinations)")]:
        conn.execute("ALTER TABLE destinations ADD COLUMN cursor INTEGER NOT NULL DEFAULT 0")
    conn.execute(f"UPDATE destinations SET cursor = ({_LAST_SEQ})")
