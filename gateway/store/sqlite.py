"""SQLite store: WAL; every write through the writer process (`writer.py`), reads through aiosqlite."""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, Sequence

import aiosqlite

from gateway import tokens
from gateway.schemas import Rating, StoredEvent, TraceIn, TraceOut
from gateway.store import EventRow, Project, SecretKey
from gateway.store.tables import PROJECT_SELECT, project_from_row, synchronous_mode
from gateway.store.writer import CreateProject, InsertEvents, Meta, UpsertTrace, WriterProcess


class SQLiteStore:
    """Writes go to the writer process (`writer.py`: group commit, acknowledged only once committed); reads go
    through aiosqlite, which WAL lets run beside the writer."""

    def __init__(self, path: str, *, synchronous: str = "FULL", busy_timeout_ms: int = 5000, max_batch: int = 2000,
                 on_commit: Callable[[int, float], None] = lambda size, seconds: None) -> None:
        """`on_commit(events, seconds)` is called after each commit (for /metrics)."""
        self.path = path
        # Checked here, so a bad setting stops the gateway at start rather than its writer process.
        self._writer = WriterProcess(path, synchronous=synchronous_mode(synchronous), busy_timeout_ms=busy_timeout_ms,
                                     max_batch=max_batch, on_commit=on_commit)
        self._reader: aiosqlite.Connection | None = None

    @property
    def writer_pid(self) -> int | None:
        return self._writer.pid

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
        if not self._writer.alive:
            return False
        try:
            async with self._reader.execute("SELECT 1") as cur:
                return (await cur.fetchone()) == (1,)
        except Exception:
            return False

    async def _one(self, sql: str, params: Sequence[Any]) -> Any:
        async with self._reader.execute(sql, params) as cur:
            return await cur.fetchone()

    async def project_by_public_key(self, public_key: str) -> Project | None:
        row = await self._one(PROJECT_SELECT + " WHERE public_key = ?", (public_key,))
        return project_from_row(row) if row else None

    async def project_by_id(self, project_id: int) -> Project | None:
        row = await self._one(PROJECT_SELECT + " WHERE id = ?", (project_id,))
        return project_from_row(row) if row else None

    async def key_by_secret(self, secret_key: str) -> SecretKey | None:
        row = await self._one("SELECT kid, project_id, token_key, revoked_at FROM secret_keys WHERE secret_hash = ?",
                              (tokens.secret_hash(secret_key),))
        return SecretKey(row[0], row[1], row[2], row[3] is not None) if row else None

    async def key_by_kid(self, kid: str) -> SecretKey | None:
        row = await self._one("SELECT kid, project_id, token_key, revoked_at FROM secret_keys WHERE kid = ?", (kid,))
        return SecretKey(row[0], row[1], row[2], row[3] is not None) if row else None

    async def meta(self, name: str, default: str) -> str:
        return await self._writer.call(Meta(name, default))

    async def create_project(self, *, name: str, origins: Sequence[str], require_token: bool = True
                             ) -> tuple[Project, str]:
        public_key, secret = await self._writer.call(CreateProject(name, list(origins), require_token))
        project = await self.project_by_public_key(public_key)
        assert project is not None
        return project, secret

    async def upsert_trace(self, project_id: int, trace: TraceIn) -> bool:
        return await self._writer.call(UpsertTrace(project_id, trace))

    def write_events(self, project_id: int, rows: list[EventRow]) -> Awaitable[list[str]]:
        return self._writer.call(InsertEvents(project_id, rows))  # no coroutine of its own: one layer less to resume

    async def get_trace(self, project_id: int, trace_id: str) -> TraceOut | None:
        row = await self._one(
            "SELECT row, trace_id, session_id, user_id, model, template, template_version, input, output, metadata, ts"
            " FROM traces WHERE project_id = ? AND trace_id = ?", (project_id, trace_id))
        if row is None:
            return None
        trace = (row[0],)
        async with self._reader.execute(
            "SELECT id, type, session_id, ts, received_at, value, reason, comment, props FROM events WHERE trace = ?"
            " ORDER BY seq", trace) as cur:
            events = [
                StoredEvent(id=r[0], type=r[1], session_id=r[2], ts=r[3], received_at=r[4], value=r[5], reason=r[6],
                            comment=r[7], **(json.loads(r[8]) if r[8] else {}))
                async for r in cur
            ]
        async with self._reader.execute(
            "SELECT session_id, value, reason, comment, updated_at FROM votes WHERE trace = ? ORDER BY session_id",
            trace) as cur:
            rating = [Rating(*r) async for r in cur]
        # Sessions per implicit signal type: repeats in one session count once.
        async with self._reader.execute(
            "SELECT type, count(DISTINCT session_id) FROM events WHERE trace = ? AND type != 'feedback' GROUP BY type",
            trace) as cur:
            signals = {r[0]: r[1] async for r in cur}
        return TraceOut(trace_id=row[1], session_id=row[2], user_id=row[3], model=row[4], template=row[5],
                        template_version=row[6], input=row[7], output=row[8],
                        metadata=json.loads(row[9]) if row[9] else None, ts=row[10], events=events, rating=rating,
                        signals=signals)
