"""Drift alerts in the store: each project's detector state, its alerts, its alert webhook and the webhook's outbox.

A detector pass (`gateway/alerts.py`) reads completed hours from the rollups, runs `analytics.drift.advance` in the
gateway, and saves what it found with `save_pass`: the new state, the alerts opened and resolved, and one delivery per
new alert when the project has a webhook, all in one transaction, and only if no other pass saved those hours first
(`next_hour` is the compare-and-set). A restart resumes from the saved state; an undelivered alert stays in the outbox.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import msgspec

from gateway.analytics import drift

SCHEMA = """
CREATE TABLE IF NOT EXISTS drift_state (
    project_id INTEGER PRIMARY KEY,
    next_hour INTEGER NOT NULL,  -- the first hour (unix seconds) not yet fed to the detector
    state BLOB NOT NULL  -- analytics.drift.dump_state
);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    key TEXT NOT NULL,  -- JSON object: {"model", "template"}, or {} for the whole project
    signal TEXT NOT NULL,
    state TEXT NOT NULL,  -- open, resolved
    detected_at INTEGER NOT NULL,  -- unix seconds of the hour whose counts opened it
    resolved_at INTEGER,
    baseline TEXT NOT NULL,  -- JSON {shown, count, rate}
    recent TEXT NOT NULL,
    method TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_by_project ON alerts (project_id, state, detected_at);
CREATE TABLE IF NOT EXISTS alert_webhooks (
    project_id INTEGER PRIMARY KEY,
    url TEXT NOT NULL,
    secret BLOB NOT NULL,  -- the signing secret, sealed (forwarding.crypto.Vault: BACKCHANNEL_ENCRYPTION_KEY)
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_deliveries (
    alert_id INTEGER PRIMARY KEY REFERENCES alerts (id),
    attempts INTEGER NOT NULL DEFAULT 0,
    first_at REAL NOT NULL,
    next_at REAL NOT NULL,
    delivered_at REAL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS alert_deliveries_due ON alert_deliveries (next_at) WHERE delivered_at IS NULL;
"""


class Side(msgspec.Struct):
    shown: int
    count: int
    rate: float


class AlertOut(msgspec.Struct):
    """An alert as `GET /v1/alerts` answers it."""

    id: str
    key: dict[str, Any]
    signal: str
    direction: Literal["worse"]
    baseline: Side
    recent: Side
    detected_at: str  # ISO 8601 start of the hour whose counts opened it
    state: Literal["open", "resolved"]
    method: str


class Delivery(msgspec.Struct, frozen=True):
    """An alert waiting to be POSTed to its project's webhook."""

    alert_id: int
    url: str
    secret: bytes  # sealed
    attempts: int
    first_at: float
    alert: AlertOut


_encode = msgspec.json.Encoder().encode
_side = msgspec.json.Decoder(Side).decode


def load_pass(conn: sqlite3.Connection, project_id: int) -> tuple[int | None, bytes | None]:
    """The project's `(next_hour, state)`, or `(None, None)` before its first pass."""
    row = conn.execute("SELECT next_hour, state FROM drift_state WHERE project_id = ?", (project_id,)).fetchone()
    return (row[0], row[1]) if row else (None, None)


def save_pass(conn: sqlite3.Connection, project_id: int, expected: int | None, next_hour: int, state: bytes,
              changes: list[drift.Alert], now: float) -> bool:
    """Save one pass: state, alerts opened or resolved, deliveries. False (nothing saved) if the project's
    `next_hour` is no longer `expected`: another pass saved these hours."""
    if load_pass(conn, project_id)[0] != expected:
        return False
    conn.execute("INSERT INTO drift_state (project_id, next_hour, state) VALUES (?, ?, ?) ON CONFLICT (project_id)"
                 " DO UPDATE SET next_hour = excluded.next_hour, state = excluded.state",
                 (project_id, next_hour, state))
    has_webhook = conn.execute("SELECT 1 FROM alert_webhooks WHERE project_id = ?", (project_id,)).fetchone()
    for change in changes:
        if change.state == "resolved":
            conn.execute("UPDATE alerts SET state = 'resolved', resolved_at = ? WHERE project_id = ? AND key = ?"
                         " AND signal = ? AND state = 'open'", (change.resolved_at, project_id, change.key,
                                                                  change.signal))
            continue
        alert_id = conn.execute(
            "INSERT INTO alerts (project_id, key, signal, state, detected_at, baseline, recent, method)"
            " VALUES (?, ?, ?, 'open', ?, ?, ?, ?)",
            (project_id, change.key, change.signal, change.detected_at, _encode(change.baseline).decode(),
             _encode(change.recent).decode(), change.method)).lastrowid
        if has_webhook:
            conn.execute("INSERT INTO alert_deliveries (alert_id, first_at, next_at) VALUES (?, ?, ?)",
                         (alert_id, now, now))
    return True


_ALERT_SELECT = ("SELECT id, key, signal, state, detected_at, baseline, recent, method FROM alerts")


def _alert(row: Any) -> AlertOut:
    alert_id, key, signal, state, detected_at, baseline, recent, method = row
    return AlertOut(id=f"al_{alert_id}", key=json.loads(key), signal=signal, direction="worse",
                    baseline=_side(baseline), recent=_side(recent), detected_at=drift.iso_hour(detected_at),
                    state=state, method=method)


def alerts(conn: sqlite3.Connection, project_id: int, state: str) -> list[AlertOut]:
    """The project's alerts in `state` (open, resolved or all), newest first."""
    where, params = "project_id = ?", [project_id]
    if state != "all":
        where += " AND state = ?"
        params.append(state)
    return [_alert(row) for row in conn.execute(
        f"{_ALERT_SELECT} WHERE {where} ORDER BY detected_at DESC, id DESC", params)]


def set_alert_webhook(conn: sqlite3.Connection, project_id: int, url: str, secret: bytes) -> None:
    conn.execute("INSERT INTO alert_webhooks (project_id, url, secret, created_at) VALUES (?, ?, ?, ?)"
                 " ON CONFLICT (project_id) DO UPDATE SET url = excluded.url, secret = excluded.secret",
                 (project_id, url, secret, int(time.time() * 1000)))


def remove_alert_webhook(conn: sqlite3.Connection, project_id: int) -> bool:
    return conn.execute("DELETE FROM alert_webhooks WHERE project_id = ?", (project_id,)).rowcount == 1


def due_deliveries(conn: sqlite3.Connection, now: float, limit: int = 50) -> list[Delivery]:
    """Undelivered alerts whose next try is due, oldest first (an alert whose webhook was removed is skipped)."""
    return [Delivery(alert_id, url, secret, attempts, first_at, _alert(row)) for alert_id, url, secret, attempts,
            first_at, *row in conn.execute(
                "SELECT d.alert_id, w.url, w.secret, d.attempts, d.first_at, a.id, a.key, a.signal, a.state,"
                " a.detected_at, a.baseline, a.recent, a.method FROM alert_deliveries AS d"
                " JOIN alerts AS a ON a.id = d.alert_id JOIN alert_webhooks AS w ON w.project_id = a.project_id"
                " WHERE d.delivered_at IS NULL AND d.next_at <= ? ORDER BY d.next_at LIMIT ?", (now, limit))]


def next_delivery_at(conn: sqlite3.Connection) -> float | None:
    """When the next delivery is due (of alerts whose project still has a webhook)."""
    return conn.execute("SELECT min(d.next_at) FROM alert_deliveries AS d JOIN alerts AS a ON a.id = d.alert_id"
                        " JOIN alert_webhooks AS w ON w.project_id = a.project_id"
                        " WHERE d.delivered_at IS NULL").fetchone()[0]


def record_delivery(conn: sqlite3.Connection, alert_id: int, *, delivered_at: float | None, next_at: float,
                    error: str = "") -> None:
    """One attempt's outcome: delivered at `delivered_at`, or (None) to be tried again at `next_at`."""
    conn.execute("UPDATE alert_deliveries SET attempts = attempts + 1, delivered_at = ?, next_at = ?, last_error = ?"
                 " WHERE alert_id = ?", (delivered_at, next_at, error or None, alert_id))


# --- Writer jobs ---

class SavePass(msgspec.Struct, tag="alerts_save_pass", array_like=True):
    project_id: int
    expected: int | None
    next_hour: int
    state: bytes
    changes: list[drift.Alert]
    now: float


class SetWebhook(msgspec.Struct, tag="alerts_set_webhook", array_like=True):
    project_id: int
    url: str
    secret: bytes


class RemoveWebhook(msgspec.Struct, tag="alerts_remove_webhook", array_like=True):
    project_id: int


class RecordDelivery(msgspec.Struct, tag="alerts_record_delivery", array_like=True):
    alert_id: int
    delivered_at: float | None
    next_at: float
    error: str


Job = SavePass | SetWebhook | RemoveWebhook | RecordDelivery
JOBS = Job.__args__  # type: ignore[attr-defined]


def run(conn: sqlite3.Connection, job: Job) -> Any:
    """Run one job inside the writer's transaction."""
    if isinstance(job, SavePass):
        return save_pass(conn, job.project_id, job.expected, job.next_hour, job.state, job.changes, job.now)
    if isinstance(job, SetWebhook):
        return set_alert_webhook(conn, job.project_id, job.url, job.secret)
    if isinstance(job, RemoveWebhook):
        return remove_alert_webhook(conn, job.project_id)
    return record_delivery(conn, job.alert_id, delivered_at=job.delivered_at, next_at=job.next_at, error=job.error)


class Alerts:
    """The drift alerts' part of a store (`store.alerts`): reads on the store's read connection, writes as jobs."""

    def __init__(self, read: Callable[..., Awaitable[Any]], write: Callable[[Job], Awaitable[Any]]) -> None:
        self._read = read
        self._write = write

    async def load_pass(self, project_id: int) -> tuple[int | None, bytes | None]:
        return await self._read(load_pass, project_id)

    async def save_pass(self, project_id: int, expected: int | None, next_hour: int, state: bytes,
                        changes: list[drift.Alert], now: float) -> bool:
        return await self._write(SavePass(project_id, expected, next_hour, state, changes, now))

    async def listed(self, project_id: int, state: str) -> list[AlertOut]:
        return await self._read(alerts, project_id, state)

    async def set_webhook(self, project_id: int, url: str, sealed_secret: bytes) -> None:
        await self._write(SetWebhook(project_id, url, sealed_secret))

    async def remove_webhook(self, project_id: int) -> bool:
        return await self._write(RemoveWebhook(project_id))

    async def due(self, now: float) -> list[Delivery]:
        return await self._read(due_deliveries, now)

    async def next_due(self) -> float | None:
        return await self._read(next_delivery_at)

    async def record(self, alert_id: int, *, delivered_at: float | None, next_at: float, error: str = "") -> None:
        await self._write(RecordDelivery(alert_id, delivered_at, next_at, error))
