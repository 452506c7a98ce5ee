"""The store: the SQLite schema (`tables.py`: a new file, migrations, the event inserts) and the `Store` interface."""

from __future__ import annotations

import sqlite3
import sys
import threading
import types
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import msgspec
import pytest

from gateway.schemas import TraceIn
from gateway.store import EventRow, tables
from gateway.store.sqlite import SQLiteStore

# The first schema (user_version 0), as tables.SCHEMA was before traces got integer rows.
SCHEMA_1 = """
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

# (project, trace_id, session_id, created_at, updated_at); inserted in this order
TRACES_1 = [(1, "t1", "s1", 111, 222), (1, "t2", "s2", 333, 444), (2, "t1", "s9", 555, 666)]
# (seq, project, id, trace_id, session_id, type, value, reason, comment, props); seq has gaps, traces interleave
EVENTS_1 = [
    (10, 1, "e1", "t1", "s1", "shown", None, None, None, None),
    (20, 1, "e2", "t2", "s2", "copied", None, None, None, '{"length":3}'),
    (30, 1, "e3", "t1", "s1", "copied", None, None, None, '{"length":5}'),
    (40, 2, "e1", "t1", "s9", "shown", None, None, None, None),
    (50, 1, "e5", "t1", "s1", "copied", None, None, None, '{"length":9}'),
    (60, 1, "e6", "t1", "s1", "feedback", 0, "too_long", "meh", '{"dwell_ms":1200}'),
    (70, 1, "e7", "t1", "s3", "copied", None, None, None, None),
    (80, 1, "e8", "t1", "s3", "feedback", 1, None, None, None),
]
# (project, trace_id, session_id, value, reason, comment, ts, updated_at)
VOTES_1 = [(1, "t1", "s1", 0, "too_long", "meh", 1060, 2060), (1, "t1", "s3", 1, None, None, 1080, 2080)]
SIGNALS_1 = [(1, "t1", "s1", "shown"), (1, "t1", "s1", "copied"), (1, "t1", "s3", "copied"), (1, "t2", "s2", "copied"),
             (2, "t1", "s9", "shown")]


def first_schema_file(path: Path) -> str:
    """A database as the first schema left it, with two projects (keys made by today's functions: those tables
    did not change), their traces, events, votes and signals."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(SCHEMA_1)
        conn.execute("BEGIN")
        for name in ("one", "two"):
            tables.create_project(conn, name=name, origins=["*"])
        conn.executemany("INSERT INTO traces (project_id, trace_id, session_id, model, metadata, ts, created_at,"
                         " updated_at) VALUES (?, ?, ?, 'model-a', '{\"a\": 1}', 1, ?, ?)", TRACES_1)
        conn.executemany("INSERT INTO events (seq, project_id, id, trace_id, session_id, type, value, reason, comment,"
                         " props, ts, received_at, ip_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1000 + ?1,"
                         " 2000 + ?1, 'hash')", EVENTS_1)
        conn.executemany("INSERT INTO votes VALUES (?, ?, ?, ?, ?, ?, ?, ?)", VOTES_1)
        conn.executemany("INSERT INTO signals VALUES (?, ?, ?, ?, 0)", SIGNALS_1)
        conn.execute("COMMIT")
    return str(path)


def dump(path: str) -> tuple[int, list[str]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute("PRAGMA user_version").fetchone()[0], list(conn.iterdump())


def table_names(conn: sqlite3.Connection) -> set[str]:
    return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [column for _, column, *_ in conn.execute(f"PRAGMA table_info({table})")]


def test_a_new_file_gets_the_current_schema(tmp_path):
    path = str(tmp_path / "bc.db")
    with closing(tables.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == tables.SCHEMA_VERSION == 4
        assert table_names(conn) >= {"meta", "projects", "secret_keys", "traces", "events", "votes"}
        assert columns(conn, "traces")[:3] == ["row", "project_id", "trace_id"]
        assert columns(conn, "events")[:4] == ["seq", "project_id", "id", "trace"]
        assert columns(conn, "votes")[:2] == ["trace", "session_id"]
    before = dump(path)
    tables.connect(path).close()
    assert dump(path) == before


async def test_the_first_schema_is_migrated_and_reads_the_same(tmp_path):
    path = first_schema_file(tmp_path / "bc.db")
    with closing(tables.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == tables.SCHEMA_VERSION
        assert table_names(conn) >= {"meta", "projects", "secret_keys", "traces", "events", "votes"}
        assert conn.execute("SELECT project_id, trace_id, session_id, created_at, updated_at FROM traces"
                            " ORDER BY row").fetchall() == TRACES_1
        assert [seq for (seq,) in conn.execute("SELECT seq FROM events ORDER BY seq")] == [e[0] for e in EVENTS_1]
    migrated = dump(path)
    tables.connect(path).close()
    assert dump(path) == migrated  # a second connect changes nothing

    store = SQLiteStore(path)
    await store.open()
    try:
        t1 = msgspec.to_builtins(await store.get_trace(1, "t1"))
        t2 = msgspec.to_builtins(await store.get_trace(1, "t2"))
        other = msgspec.to_builtins(await store.get_trace(2, "t1"))
    finally:
        await store.close()
    assert [(e["id"], e["type"], e["session_id"], e.get("value"), e.get("reason"), e.get("comment"), e.get("length"),
             e.get("dwell_ms"), e["ts"], e["received_at"]) for e in t1["events"]] == [
        ("e1", "shown", "s1", None, None, None, None, None, 1010, 2010),
        ("e3", "copied", "s1", None, None, None, 5, None, 1030, 2030),
        ("e5", "copied", "s1", None, None, None, 9, None, 1050, 2050),
        ("e6", "feedback", "s1", 0, "too_long", "meh", None, 1200, 1060, 2060),
        ("e7", "copied", "s3", None, None, None, None, None, 1070, 2070),
        ("e8", "feedback", "s3", 1, None, None, None, None, 1080, 2080),
    ]
    assert t1["rating"] == [
        {"session_id": "s1", "value": 0, "reason": "too_long", "comment": "meh", "updated_at": 2060},
        {"session_id": "s3", "value": 1, "reason": None, "comment": None, "updated_at": 2080},
    ]
    assert t1["signals"] == {"copied": 2, "shown": 1}
    assert (t1["session_id"], t1["model"], t1["metadata"], t1["ts"]) == ("s1", "model-a", {"a": 1}, 1)
    assert [e["id"] for e in t2["events"]] == ["e2"] and t2["signals"] == {"copied": 1} and t2["rating"] == []
    assert [e["id"] for e in other["events"]] == ["e1"] and other["signals"] == {"shown": 1}


async def test_events_written_after_the_migration_follow_the_old_ones(tmp_path):
    path = first_schema_file(tmp_path / "bc.db")
    with closing(tables.connect(path)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        assert tables.upsert_trace(conn, 1, TraceIn(trace_id="t3", session_id="s4")) is True
        outcomes = tables.insert_event_batches(conn, [(1, [row("e9"), row("e1"), row("e10", trace_id="t3")])], {})
        conn.execute("COMMIT")
        assert outcomes == [["accepted", "duplicate", "accepted"]]
        assert conn.execute("SELECT row FROM traces WHERE trace_id = 't3'").fetchone() == (4,)
    store = SQLiteStore(path)
    await store.open()
    try:
        assert [e.id for e in (await store.get_trace(1, "t1")).events] == ["e1", "e3", "e5", "e6", "e7", "e8", "e9"]
    finally:
        await store.close()


@pytest.mark.parametrize("orphan, column", [
    ("INSERT INTO events VALUES (90, 1, 'e9', 'gone', 's1', 'shown', NULL, NULL, NULL, NULL, 1, 2, 'hash')",
     "events.trace"),
    ("INSERT INTO votes VALUES (1, 'gone', 's1', 1, NULL, NULL, 1, 2)", "votes.trace"),  # after traces and events
], ids=["event", "vote"])
def test_a_failed_migration_leaves_the_file_as_it_was(tmp_path, orphan, column):
    path = first_schema_file(tmp_path / "bc.db")
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(orphan)  # the first schema let a row name a trace that does not exist; the second cannot
    before = dump(path)
    with pytest.raises(RuntimeError, match=f"could not migrate .* as it was: NOT NULL constraint failed: {column}"):
        tables.connect(path)
    assert dump(path) == before
    assert before[0] == 0 and "signals" in "\n".join(before[1])


def test_a_newer_schema_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "bc.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE future (x)")
        conn.execute(f"PRAGMA user_version = {tables.SCHEMA_VERSION + 1}")
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match=f"schema version {tables.SCHEMA_VERSION + 1}"):
        tables.connect(str(path))
    assert path.read_bytes() == before


def test_concurrent_connects_migrate_once(tmp_path):
    path = first_schema_file(tmp_path / "bc.db")
    start = threading.Barrier(4)

    def connect(_: int) -> None:
        start.wait()
        tables.connect(path).close()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(connect, range(4)))  # raises what any of them raised
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == tables.SCHEMA_VERSION
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == len(EVENTS_1)
        assert conn.execute("SELECT count(*) FROM traces").fetchone()[0] == len(TRACES_1)


# --- Writes ---

def row(id: str, *, trace_id: str = "t1", type: str = "shown", session_id: str = "s1", value: int | None = None,
        ts: int = 1000) -> EventRow:
    return EventRow(id=id, trace_id=trace_id, session_id=session_id, type=type, value=value, reason=None,
                    comment=None, props=None, ts=ts, ip_hash="hash")


@pytest.fixture
def db(tmp_path):
    with closing(tables.connect(str(tmp_path / "bc.db"))) as conn:
        conn.execute("BEGIN IMMEDIATE")
        for name in ("one", "two"):
            project, _ = tables.create_project(conn, name=name, origins=["*"])
            tables.upsert_trace(conn, project.id, TraceIn(trace_id="t1", session_id="s1"))
        conn.execute("COMMIT")
        yield conn


def commit(conn: sqlite3.Connection, batches, known_traces: dict[tuple[int, str], int]) -> list[list[str]]:
    conn.execute("BEGIN IMMEDIATE")
    outcomes = tables.insert_event_batches(conn, batches, known_traces)
    conn.execute("COMMIT")
    return outcomes


def test_upsert_trace_keeps_its_row(db):
    db.execute("BEGIN IMMEDIATE")
    assert tables.upsert_trace(db, 1, TraceIn(trace_id="t2", session_id="s1", model="a")) is True
    assert tables.upsert_trace(db, 1, TraceIn(trace_id="t2", session_id="s1", model="b")) is False
    db.execute("COMMIT")
    assert db.execute("SELECT row, model FROM traces WHERE project_id = 1 AND trace_id = 't2'").fetchall() == [(3, "b")]


def test_unknown_traces_and_duplicates(db):
    known: dict[tuple[int, str], int] = {}
    assert commit(db, [(1, [row("a"), row("b", trace_id="nope"), row("a")]), (1, [row("c")])], known) == [
        ["accepted", "unknown_trace", "duplicate"], ["accepted"]]
    assert known == {(1, "t1"): 1}
    # Across commits, with the cache and without it; the same id in another project is another event.
    for cache in (known, {}):
        assert commit(db, [(1, [row("a"), row("c")]), (2, [row("a")])], cache) == [
            ["duplicate", "duplicate"], ["accepted" if cache is known else "duplicate"]]
    assert known == {(1, "t1"): 1, (2, "t1"): 2}
    assert db.execute("SELECT project_id, id, trace FROM events ORDER BY seq").fetchall() == [
        (1, "a", 1), (1, "c", 1), (2, "a", 2)]


def test_the_newest_vote_by_client_time_wins(db):
    def votes() -> list[tuple]:
        return db.execute("SELECT trace, session_id, value, ts FROM votes ORDER BY trace, session_id").fetchall()

    known: dict[tuple[int, str], int] = {}
    commit(db, [(1, [row("v1", type="feedback", value=0, ts=200), row("v2", type="feedback", value=1, ts=100)])], known)
    assert votes() == [(1, "s1", 0, 200)]
    commit(db, [(1, [row("v3", type="feedback", value=1, ts=150), row("x", type="copied", ts=999)])], known)
    assert votes() == [(1, "s1", 0, 200)]
    commit(db, [(1, [row("v4", type="feedback", value=1, ts=300)]),
                (1, [row("v5", type="feedback", value=0, session_id="s2", ts=1)])], known)
    assert votes() == [(1, "s1", 1, 300), (1, "s2", 0, 1)]


# --- The Store interface, served (writer process) and for commands (one connection) ---

@pytest.mark.parametrize("writer_process", [True, False], ids=["served", "command"])
async def test_every_store_operation_through_the_interface(tmp_path, writer_process):
    from gateway import tokens

    store = SQLiteStore(str(tmp_path / "bc.db"), writer_process=writer_process)
    await store.open()
    try:
        project, secret = await store.create_project(name="p", origins=["https://a.example/"], require_token=False)
        assert (project.origins, project.require_token) == (("https://a.example",), False)
        assert await store.project_by_public_key(project.public_key) == project == await store.project_by_id(project.id)
        assert await store.list_projects() == [project]
        second = await store.add_secret_key(project.id)
        assert [k.kid for k in await store.keys_of(project.id)] == [tokens.key_id(secret), tokens.key_id(second)]
        assert await store.revoke_secret_key(project.id, tokens.key_id(secret))
        assert not await store.revoke_secret_key(project.id, tokens.key_id(secret))  # no longer live
        assert (await store.key_by_secret(secret)).revoked and not (await store.key_by_kid(tokens.key_id(second))).revoked
        assert await store.meta("salt", "first") == "first" == await store.meta("salt", "second")
        assert await store.upsert_trace(project.id, TraceIn(trace_id="t", session_id="s")) is True
        ids = [uuid.uuid4(), uuid.uuid4()]
        rows = [EventRow(i, "t", "s", "shown", None, None, None, None, 1, "h") for i in ids]
        assert await store.write_events(project.id, rows) == ["accepted", "accepted"]
        assert await store.write_events(project.id, rows[:1]) == ["duplicate"]
        assert [e.id for e in (await store.get_trace(project.id, "t")).events] == [str(i) for i in ids]
        assert await store.ping()
    finally:
        await store.close()


@pytest.fixture
def feature(monkeypatch):
    """A feature module (as `tables.FEATURES` names them) with a table and an upgrade step."""
    module = types.ModuleType("bc_test_feature")
    module.SCHEMA = "CREATE TABLE IF NOT EXISTS feature_log (first_seq INTEGER, last_seq INTEGER, note TEXT);\n"

    def upgrade_from_2(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO feature_log VALUES (NULL, NULL, 'backfilled: ' ||"
                     " (SELECT count(*) FROM events))")

    module.upgrade_from_2 = upgrade_from_2
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(tables, "FEATURES", (module.__name__,))
    tables.features.cache_clear()
    yield module
    tables.features.cache_clear()


def _as_version_2(path: str) -> str:
    """A file as version 2 left it: the base tables only."""
    with closing(tables.connect(path)):
        pass
    with closing(sqlite3.connect(path)) as conn:
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN"
                                    " ('meta', 'projects', 'secret_keys', 'traces', 'events', 'votes')").fetchall():
            conn.execute(f"DROP TABLE {name}")
        conn.execute("PRAGMA user_version = 2")
    return path


def test_a_feature_table_reaches_new_and_older_files(tmp_path, feature):
    """Version 3 is the features' tables (and 4 a change to one): a new file gets them, a version 2 or first-schema
    file is upgraded (with the feature's own step run on its data), all in the one upgrade transaction."""
    v1 = first_schema_file(tmp_path / "v1.db")
    with closing(sqlite3.connect(v1)):
        pass
    tables.FEATURES, saved = (), tables.FEATURES
    tables.features.cache_clear()
    v2 = _as_version_2(str(tmp_path / "v2.db"))
    tables.FEATURES = saved
    tables.features.cache_clear()
    for path, notes in ((v2, ["backfilled: 0"]), (v1, [f"backfilled: {len(EVENTS_1)}"]),
                        (str(tmp_path / "new.db"), [])):
        with closing(tables.connect(path)) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == tables.SCHEMA_VERSION == 4
            assert [n for (n,) in conn.execute("SELECT note FROM feature_log")] == notes
    with closing(sqlite3.connect(v1)) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == len(EVENTS_1)


