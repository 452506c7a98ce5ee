"""The one-time repairs run when a version 2 file is upgraded (gateway/store/repairs.py)."""

from __future__ import annotations

import sqlite3
from contextlib import closing

from gateway.bounds import TS_FUTURE_MS
from gateway.schemas import TraceIn
from gateway.store import tables
from tests.test_store import _as_version_2

RECEIVED = 1_764_000_000_000


def test_a_vote_pinned_by_a_future_timestamp_is_unpinned_and_others_are_left(tmp_path):
    path = str(tmp_path / "bc.db")
    with closing(tables.connect(path)) as conn:
        with tables.transaction(conn):
            project, _ = tables.create_project(conn, name="p", origins=["*"])
            tables.upsert_trace(conn, project.id, TraceIn(trace_id="t", session_id="s"))
    _as_version_2(path)
    votes = {"pinned": RECEIVED + 80 * 365 * 86_400_000, "just-ahead": RECEIVED + TS_FUTURE_MS,
             "past": RECEIVED - 1000}
    with closing(sqlite3.connect(path)) as conn, conn:
        (trace,) = conn.execute("SELECT row FROM traces").fetchone()
        conn.executemany("INSERT INTO votes (trace, session_id, value, ts, updated_at) VALUES (?, ?, 0, ?, ?)",
                         [(trace, session, ts, RECEIVED) for session, ts in votes.items()])
    with closing(tables.connect(path)) as conn:
        assert dict(conn.execute("SELECT session_id, ts FROM votes")) == {**votes, "pinned": RECEIVED}
