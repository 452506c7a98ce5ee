"""SQLite store: WAL; writes through the writer process (`writer.py`), reads on a connection of their own."""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Coroutine, Sequence, TypeVar

import msgspec

from gateway.schemas import DEFAULT_EVENTS_PAGE, TraceIn, TraceOut
from gateway.store import EventRow, KeyInfo, Project, SecretKey, StoreUnavailable
from gateway.store import tables
from gateway.store.alerts import Alerts
from gateway.store.files import StoreFiles
from gateway.store.outbox import Outbox
from gateway.store.review import ReviewStore
from gateway.store.rollups import Stats
from gateway.store.writer import (
    AddSecretKey, CreateProject, InsertEvents, Meta, Op, RevokeSecretKey, SaltOfDay, UpsertTrace, WriterProcess,
    run_job,
)

T = TypeVar("T")
log = logging.getLogger("backchannel.store")

_encode_op = msgspec.msgpack.Encoder().encode
_decode_op = msgspec.msgpack.Decoder(Op).decode


class SQLiteStore:
    """Writes go to the writer process (group commit, acknowledged only once committed); reads run on one read-only
    connection in a thread of their own, which WAL lets read beside the writer.

    `writer_process=False` is for commands (the CLI, the demo's seeding): no process to start, and each write runs
    on the one connection in a transaction of its own. A file that needs migrating is migrated by `open` either way.
    """

    def __init__(self, path: str, *, synchronous: str = "FULL", busy_timeout_ms: int = 5000, max_batch: int = 2000,
                 on_commit: Callable[[int, float], None] = lambda size, seconds: None,
                 writer_process: bool = True) -> None:
        """`on_commit(events, seconds)` is called after each commit (for /metrics)."""
        self.path = path
        self._synchronous = tables.synchronous_mode(synchronous)  # a bad setting stops the gateway at start
        self._busy_timeout_ms = busy_timeout_ms
        self._writer = WriterProcess(path, synchronous=self._synchronous, busy_timeout_ms=busy_timeout_ms,
                                     max_batch=max_batch, on_commit=on_commit) if writer_process else None
        self._thread: ThreadPoolExecutor | None = None
        self.outbox = Outbox(self._read, self._write)
        self.review = ReviewStore(self._read, self._write)
        self.stats = Stats(self._read, self._write)
        self.alerts = Alerts(self._read, self._write)
        self._conn: sqlite3.Connection | None = None
        self._files: StoreFiles | None = None  # as opened, for the readiness probe
        self._files_lost = False

    @property
    def writer_pid(self) -> int | None:
        return self._writer.pid if self._writer is not None else None

    async def open(self) -> None:
        if self._writer is not None:
            await self._writer.start()  # creates the schema before the reader looks
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="backchannel-store")
        self._conn = await self._in_thread(functools.partial(
            tables.connect, self.path, synchronous=self._synchronous, busy_timeout_ms=self._busy_timeout_ms))
        if self._writer is not None:
            self._conn.execute("PRAGMA query_only = 1")
        self._files = StoreFiles(self.path)
        await self.stats.catch_up()  # before any event is stored: see `rollups.catch_up` on a file without watermark

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.close()
        if self._conn is not None:
            await self._in_thread(self._conn.close)
        if self._thread is not None:
            self._thread.shutdown()

    async def ping(self) -> bool:
        if self._writer is not None and not self._writer.alive:
            return False
        if self._files is not None and (problem := self._files.problem()) is not None:
            if not self._files_lost:
                self._files_lost = True
                log.error("%s: not ready, and the writer refuses every write", problem)
            return False
        try:
            return await self._read(tables.ping)
        except sqlite3.Error:
            return False

    def _in_thread(self, call: Callable[[], T]) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._thread, call)

    def _read(self, read: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        return self._in_thread(functools.partial(read, self._conn, *args))

    async def _write(self, op: Op) -> Any:
        if self._writer is not None:
            return await self._writer.call(op)
        # As the writer would read it (e.g. event ids as text), then in a transaction of its own.
        return await self._in_thread(functools.partial(_run_alone, self._conn, _decode_op(_encode_op(op))))

    # Projects and keys

    async def project_by_public_key(self, public_key: str) -> Project | None:
        return await self._read(tables.project_by_public_key, public_key)

    async def project_by_id(self, project_id: int) -> Project | None:
        return await self._read(tables.project_by_id, project_id)

    async def list_projects(self) -> list[Project]:
        return await self._read(tables.list_projects)

    async def create_project(self, *, name: str, origins: Sequence[str], require_token: bool = True
                             ) -> tuple[Project, str]:
        public_key, secret = await self._write(CreateProject(name, list(origins), require_token))
        project = await self.project_by_public_key(public_key)
        assert project is not None
        return project, secret

    async def key_by_secret(self, secret_key: str) -> SecretKey | None:
        return await self._read(tables.key_by_secret, secret_key)

    async def key_by_kid(self, kid: str) -> SecretKey | None:
        return await self._read(tables.key_by_kid, kid)

    async def keys_of(self, project_id: int) -> list[KeyInfo]:
        return await self._read(tables.keys_of, project_id)

    async def add_secret_key(self, project_id: int) -> str:
        return await self._write(AddSecretKey(project_id))

    async def revoke_secret_key(self, project_id: int, kid: str) -> bool:
        return await self._write(RevokeSecretKey(project_id, kid))

    # Traces and events

    async def upsert_trace(self, project_id: int, trace: TraceIn) -> bool:
        return await self._write(UpsertTrace(project_id, trace))

    async def get_trace(self, project_id: int, trace_id: str, *, after: str | None = None,
                        limit: int = DEFAULT_EVENTS_PAGE) -> TraceOut | None:
        read = functools.partial(tables.get_trace, after=after, limit=limit)
        return await self._read(read, project_id, trace_id)

    def write_events(self, project_id: int, rows: list[EventRow[uuid.UUID]]) -> Coroutine[Any, Any, list[str]]:
        # `Store.write_events` as the writer's own coroutine, not one awaiting it: the hot path resumes a layer less.
        op = InsertEvents(project_id, rows)  # type: ignore[arg-type]  # the ids go to the writer as text
        return self._writer.call(op) if self._writer is not None else self._write(op)

    async def meta(self, name: str, default: str) -> str:
        return await self._write(Meta(name, default))

    async def salt_of_day(self, day: int) -> str:
        return await self._write(SaltOfDay(day))


def _run_alone(conn: sqlite3.Connection, op: Op) -> Any:
    try:
        with tables.transaction(conn):
            return run_job(conn, op)
    except sqlite3.OperationalError as exc:  # e.g. the database is locked past the busy timeout
        raise StoreUnavailable(str(exc)) from exc
