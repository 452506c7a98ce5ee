"""SQLite store: WAL, one writer thread with group commit, reads through aiosqlite.

Every write goes through `_Writer`: requests queue jobs, the writer runs all queued jobs in ONE transaction (each job in its
own savepoint, so one failing job sinks only itself) and resolves each request only after COMMIT returned. While a commit
runs, new jobs pile up and ride the next one: the busier the gateway, the bigger (and cheaper per event) each commit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sqlite3
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import aiosqlite
import msgspec

from gateway import tokens
from gateway.schemas import DEFAULT_REASONS, Rating, Reason, StoredEvent, TraceIn, TraceOut
from gateway.store import EventRow, Project, SecretKey, StoreUnavailable

log = logging.getLogger("backchannel.store")

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
CREATE TABLE IF NOT EXISTS traces (
    project_id INTEGER NOT NULL,
    trace_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    user_id TEXT, model TEXT, template TEXT, template_version TEXT,
    input TEXT, output TEXT, metadata TEXT,
    ts INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (project_id, trace_id)
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    id TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    type TEXT NOT NULL,
    value INTEGER, reason TEXT, comment TEXT, props TEXT,
    ts INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    ip_hash TEXT NOT NULL,
    UNIQUE (project_id, id)
);
CREATE INDEX IF NOT EXISTS events_by_trace ON events (project_id, trace_id);
-- The current explicit vote per (trace, session); the event log keeps the history.
CREATE TABLE IF NOT EXISTS votes (
    project_id INTEGER NOT NULL,
    trace_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    value INTEGER NOT NULL, reason TEXT, comment TEXT,
    ts INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (project_id, trace_id, session_id)
);
-- The first implicit signal of each kind per (trace, session): repeats count once in rates.
CREATE TABLE IF NOT EXISTS signals (
    project_id INTEGER NOT NULL,
    trace_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    type TEXT NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (project_id, trace_id, session_id, type)
) WITHOUT ROWID;
"""

_reasons_encoder = msgspec.json.Encoder()
_decode_reasons = msgspec.json.Decoder(list[Reason]).decode


def now_ms() -> int:
    return int(time.time() * 1000)


def connect(path: str, *, synchronous: str = "FULL", busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), with the schema in place."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")
    if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
        raise ValueError(f"sqlite synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: the random-UUID unique index stays in memory
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.executescript(SCHEMA)
    return conn


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


def list_projects(conn: sqlite3.Connection) -> list[Project]:
    return [_project(row) for row in conn.execute(_PROJECT_SELECT + " ORDER BY id")]


def project_by_public_key(conn: sqlite3.Connection, public_key: str) -> Project | None:
    row = conn.execute(_PROJECT_SELECT + " WHERE public_key = ?", (public_key,)).fetchone()
    return _project(row) if row else None


def key_ids(conn: sqlite3.Connection, project_id: int) -> list[dict[str, Any]]:
    return [{"kid": kid, "created_at": created, "revoked_at": revoked} for kid, created, revoked in conn.execute(
        "SELECT kid, created_at, revoked_at FROM secret_keys WHERE project_id = ? ORDER BY created_at", (project_id,))]


def _upsert_trace(conn: sqlite3.Connection, project_id: int, trace: TraceIn) -> bool:
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
         trace.template_version, trace.input, trace.output, metadata, trace.ts if trace.ts is not None else now, now,
         now),
    )
    return existed is None


# Rows travel into SQLite as ONE JSON array per statement, unpacked by json_each in C: the writer thread then holds
# the GIL for a handful of statements per commit, not for every row (it competes with the event loop for it).
_encode_rows = msgspec.json.Encoder().encode


def _col(n: int) -> str:
    return f"json_extract(j.value, '$[{n}]')"


_INSERT_EVENTS = (
    "INSERT INTO events (project_id, id, trace_id, session_id, type, value, reason, comment, props, ts, received_at,"
    f" ip_hash) SELECT {', '.join(_col(n) for n in range(12))} FROM json_each(?) AS j")
# Newest vote wins by client time, so a late retry of an older click cannot undo a newer one.
_UPSERT_VOTES = (
    "INSERT INTO votes (project_id, trace_id, session_id, value, reason, comment, ts, updated_at)"
    f" SELECT {', '.join(_col(n) for n in range(8))} FROM json_each(?) AS j WHERE true"
    " ON CONFLICT (project_id, trace_id, session_id) DO UPDATE SET value = excluded.value, reason = excluded.reason,"
    " comment = excluded.comment, ts = excluded.ts, updated_at = excluded.updated_at WHERE excluded.ts >= votes.ts")
_INSERT_SIGNALS = (
    "INSERT INTO signals (project_id, trace_id, session_id, type, ts)"
    f" SELECT {', '.join(_col(n) for n in range(5))} FROM json_each(?) AS j WHERE true ON CONFLICT DO NOTHING")


def _present(conn: sqlite3.Connection, table: str, column: str, project_id: int, values: set[str]) -> set[str]:
    """Which of `values` the project's `table` has in `column`."""
    return {row[0] for row in conn.execute(
        f"SELECT {column} FROM {table} WHERE project_id = ? AND {column} IN (SELECT value FROM json_each(?))",
        (project_id, _encode_rows(sorted(values))))}


def _insert_event_batches(conn: sqlite3.Connection, batches: Sequence[tuple[int, Sequence[EventRow]]],
                          known_traces: set[tuple[int, str]]) -> list[list[str]]:
    """Insert many requests' events at once; per request, per row: "accepted", "duplicate" or "unknown_trace".

    Runs inside the writer's IMMEDIATE transaction, so no other process writes between the look-ups and the inserts:
    an id already stored (or earlier in this commit) is a duplicate and is not inserted again.
    """
    received = now_ms()
    by_project: dict[int, tuple[set[str], set[str]]] = {}
    for project_id, rows in batches:
        traces, ids = by_project.setdefault(project_id, (set(), set()))
        traces.update(row.trace_id for row in rows if (project_id, row.trace_id) not in known_traces)
        ids.update(row.id for row in rows)
    stored: set[tuple[int, str]] = set()
    for project_id, (traces, ids) in by_project.items():
        if traces:
            known_traces.update((project_id, t) for t in _present(conn, "traces", "trace_id", project_id, traces))
        stored.update((project_id, i) for i in _present(conn, "events", "id", project_id, ids))

    events, votes, signals, outcomes = [], [], [], []
    for project_id, rows in batches:
        outcome = []
        for row in rows:
            if (project_id, row.trace_id) not in known_traces:
                outcome.append("unknown_trace")
                continue
            if (project_id, row.id) in stored:
                outcome.append("duplicate")
                continue
            stored.add((project_id, row.id))
            outcome.append("accepted")
            events.append((project_id, row.id, row.trace_id, row.session_id, row.type, row.value, row.reason,
                           row.comment, row.props, row.ts, received, row.ip_hash))
            if row.type == "feedback":
                votes.append((project_id, row.trace_id, row.session_id, row.value, row.reason, row.comment, row.ts,
                              received))
            else:
                signals.append((project_id, row.trace_id, row.session_id, row.type, row.ts))
        outcomes.append(outcome)
    for sql, rows in ((_INSERT_EVENTS, events), (_UPSERT_VOTES, votes), (_INSERT_SIGNALS, signals)):
        if rows:
            conn.execute(sql, (_encode_rows(rows),))
    return outcomes


def _meta(conn: sqlite3.Connection, name: str, default_factory: Callable[[], str]) -> str:
    conn.execute("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING", (name, default_factory()))
    return conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()[0]


_PROJECT_SELECT = "SELECT id, public_key, name, origins, require_token, reasons, delay_ms, created_at FROM projects"


def _project(row: Sequence[Any]) -> Project:
    return Project(row[0], row[1], row[2], tuple(json.loads(row[3])), bool(row[4]), tuple(_decode_reasons(row[5])),
                   row[6], row[7])


# --- The writer ---

@dataclass
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    weight: int
    future: asyncio.Future = field(repr=False)
    bulk: bool = False  # jobs of one bulk `fn` in a commit are run as ONE call: fn(conn, [args, ...]) -> [result, ...]


class _Writer:
    def __init__(self, path: str, *, synchronous: str, busy_timeout_ms: int, max_batch: int,
                 observe: Callable[[int, float], None], on_rollback: Callable[[], None]) -> None:
        self._path = path
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._max_batch = max_batch
        self._observe = observe
        self._on_rollback = on_rollback
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="backchannel-writer")
        self._pending: deque[_Job] = deque()
        self._wakeup = asyncio.Event()
        self._conn: sqlite3.Connection | None = None
        self._task: asyncio.Task | None = None
        self._closing = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(
            self._executor,
            lambda: connect(self._path, synchronous=self._synchronous, busy_timeout_ms=self._busy_timeout_ms),
        )
        self._task = asyncio.create_task(self._run(), name="backchannel-writer")

    async def submit(self, fn: Callable[..., Any], *args: Any, weight: int = 1, bulk: bool = False) -> Any:
        if self._closing:
            raise StoreUnavailable("the store is shutting down")
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Job(fn, args, weight, future, bulk))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, weight = [], 0
                while self._pending and (not batch or weight + self._pending[0].weight <= self._max_batch):
                    job = self._pending.popleft()
                    batch.append(job)
                    weight += job.weight
                started = time.perf_counter()
                try:
                    results = await loop.run_in_executor(self._executor, self._commit, batch)
                except Exception as exc:  # the whole transaction rolled back: nothing of it is stored
                    log.error("commit of %d jobs failed: %s", len(batch), exc)
                    for job in batch:
                        if not job.future.done():
                            job.future.set_exception(StoreUnavailable(str(exc)))
                    continue
                self._observe(weight, time.perf_counter() - started)
                for job, result in zip(batch, results):
                    if job.future.done():
                        continue
                    if isinstance(result, BaseException):
                        job.future.set_exception(result)
                    else:
                        job.future.set_result(result)

    def _commit(self, batch: list[_Job]) -> list[Any]:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            results: list[Any] = [None] * len(batch)
            bulk: dict[Callable[..., Any], list[int]] = {}
            for i, job in enumerate(batch):
                if job.bulk:
                    bulk.setdefault(job.fn, []).append(i)
                    continue
                conn.execute("SAVEPOINT job")
                try:
                    results[i] = job.fn(conn, *job.args)
                except (sqlite3.IntegrityError, ValueError) as exc:  # this job's own fault; its neighbours go on
                    conn.execute("ROLLBACK TO job")
                    results[i] = exc
                conn.execute("RELEASE job")
            # After the single jobs, so an event sees a trace logged in the same commit.
            for fn, indexes in bulk.items():
                for i, result in zip(indexes, fn(conn, [batch[i].args for i in indexes])):
                    results[i] = result
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._on_rollback()
            raise
        return results

    async def close(self) -> None:
        self._closing = True
        while self._pending:  # drain: every queued request still gets its commit
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
        self._executor.shutdown(wait=True)


class SQLiteStore:
    def __init__(self, path: str, *, synchronous: str = "FULL", busy_timeout_ms: int = 5000, max_batch: int = 2000,
                 on_commit: Callable[[int, float], None] = lambda size, seconds: None) -> None:
        """`on_commit(events, seconds)` is called after each commit (for /metrics)."""
        self.path = path
        # (project_id, trace_id) pairs known to exist; traces are never deleted. Touched only on the writer thread,
        # and forgotten on a rollback (which may have undone a trace this cache saw in the failed transaction).
        self._known_traces: set[tuple[int, str]] = set()
        self._writer = _Writer(path, synchronous=synchronous, busy_timeout_ms=busy_timeout_ms, max_batch=max_batch,
                               observe=on_commit, on_rollback=self._known_traces.clear)
        self._reader: aiosqlite.Connection | None = None

    def _insert_events(self, conn: sqlite3.Connection, batches: Sequence[tuple[int, Sequence[EventRow]]]
                       ) -> list[list[str]]:
        if len(self._known_traces) > 200_000:
            self._known_traces.clear()
        return _insert_event_batches(conn, batches, self._known_traces)

    async def open(self) -> None:
        await self._writer.start()  # creates the schema before the reader looks
        self._reader = await aiosqlite.connect(self.path)
        await self._reader.execute("PRAGMA busy_timeout = 5000")
        await self._reader.execute("PRAGMA query_only = 1")

    async def close(self) -> None:
        await self._writer.close()
        if self._reader is not None:
            await self._reader.close()

    async def ping(self) -> bool:
        try:
            async with self._reader.execute("SELECT 1") as cur:
                return (await cur.fetchone()) == (1,)
        except Exception:
            return False

    async def _one(self, sql: str, params: Sequence[Any]) -> Any:
        async with self._reader.execute(sql, params) as cur:
            return await cur.fetchone()

    async def project_by_public_key(self, public_key: str) -> Project | None:
        row = await self._one(_PROJECT_SELECT + " WHERE public_key = ?", (public_key,))
        return _project(row) if row else None

    async def project_by_id(self, project_id: int) -> Project | None:
        row = await self._one(_PROJECT_SELECT + " WHERE id = ?", (project_id,))
        return _project(row) if row else None

    async def key_by_secret(self, secret_key: str) -> SecretKey | None:
        row = await self._one("SELECT kid, project_id, token_key, revoked_at FROM secret_keys WHERE secret_hash = ?",
                              (tokens.secret_hash(secret_key),))
        return SecretKey(row[0], row[1], row[2], row[3] is not None) if row else None

    async def key_by_kid(self, kid: str) -> SecretKey | None:
        row = await self._one("SELECT kid, project_id, token_key, revoked_at FROM secret_keys WHERE kid = ?", (kid,))
        return SecretKey(row[0], row[1], row[2], row[3] is not None) if row else None

    async def meta(self, name: str, default_factory: Callable[[], str]) -> str:
        return await self._writer.submit(_meta, name, default_factory)

    async def create_project(self, **kwargs: Any) -> tuple[Project, str]:
        return await self._writer.submit(lambda conn: create_project(conn, **kwargs))

    async def upsert_trace(self, project_id: int, trace: TraceIn) -> bool:
        return await self._writer.submit(_upsert_trace, project_id, trace)

    async def write_events(self, project_id: int, rows: Sequence[EventRow]) -> list[str]:
        return await self._writer.submit(self._insert_events, project_id, rows, weight=max(1, len(rows)), bulk=True)

    async def get_trace(self, project_id: int, trace_id: str) -> TraceOut | None:
        row = await self._one(
            "SELECT trace_id, session_id, user_id, model, template, template_version, input, output, metadata, ts"
            " FROM traces WHERE project_id = ? AND trace_id = ?", (project_id, trace_id))
        if row is None:
            return None
        key = (project_id, trace_id)
        async with self._reader.execute(
            "SELECT id, type, session_id, ts, received_at, value, reason, comment, props FROM events"
            " WHERE project_id = ? AND trace_id = ? ORDER BY seq", key) as cur:
            events = [
                StoredEvent(id=r[0], type=r[1], session_id=r[2], ts=r[3], received_at=r[4], value=r[5], reason=r[6],
                            comment=r[7], **(json.loads(r[8]) if r[8] else {}))
                async for r in cur
            ]
        async with self._reader.execute(
            "SELECT session_id, value, reason, comment, updated_at FROM votes WHERE project_id = ? AND trace_id = ?"
            " ORDER BY session_id", key) as cur:
            rating = [Rating(*r) async for r in cur]
        async with self._reader.execute(
            "SELECT type, count(*) FROM signals WHERE project_id = ? AND trace_id = ? GROUP BY type", key) as cur:
            signals = {r[0]: r[1] async for r in cur}
        return TraceOut(trace_id=row[0], session_id=row[1], user_id=row[2], model=row[3], template=row[4],
                        template_version=row[5], input=row[6], output=row[7],
                        metadata=json.loads(row[8]) if row[8] else None, ts=row[9], events=events, rating=rating,
                        signals=signals)
