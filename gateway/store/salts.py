"""Daily salts for client-IP hashes (Plausible's scheme): one random salt per UTC day, kept in the store so every
replica hashes with the same one, and deleted once its day is over. A hash of a finished day cannot then be recomputed
from the database: the salt it needs is gone.
"""

from __future__ import annotations

import secrets
import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS ip_salts (day INTEGER PRIMARY KEY, salt TEXT NOT NULL);
"""


def new_salt() -> str:
    return secrets.token_hex(32)


def salt_of_day(conn: sqlite3.Connection, day: int, fresh: str | None = None) -> str:
    """Day `day`'s salt (days since the Unix epoch, UTC): the stored one, or a new random one (`fresh`, if given)
    stored now if the day has none yet: the first replica to ask creates it, the others read it. A replica whose clock
    is behind gets the newest day's salt rather than bringing back a deleted one. Deletes every earlier day's salt, and
    the single salt kept beside the hashes before daily salts. Runs inside a write transaction."""
    newest = conn.execute("SELECT max(day) FROM ip_salts").fetchone()[0]
    if newest is not None and newest > day:
        day = newest
    conn.execute("DELETE FROM ip_salts WHERE day < ?", (day,))
    conn.execute("DELETE FROM meta WHERE name = 'ip_salt'")
    conn.execute("INSERT INTO ip_salts (day, salt) VALUES (?, ?) ON CONFLICT DO NOTHING", (day, fresh or new_salt()))
    return conn.execute("SELECT salt FROM ip_salts WHERE day = ?", (day,)).fetchone()[0]
