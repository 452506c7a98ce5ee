"""One-time repairs, when a version 2 file is upgraded, of what was stored before the gateway bounded client input."""

from __future__ import annotations

import sqlite3

from gateway.bounds import TS_FUTURE_MS

SCHEMA = ""  # no tables of its own


def upgrade_from_2(conn: sqlite3.Connection) -> None:
    # A vote's client `ts` was believed up to year 9999, and the newest `ts` wins: one dated in the future locked its
    # session's vote. Such a vote is ordered as received (`updated_at`), as the events route now does.
    conn.execute("UPDATE votes SET ts = updated_at WHERE ts > updated_at + ?", (TS_FUTURE_MS,))
