"""The SQLite writer: a child process that owns every write, with group commit.

Why a process and not a thread: SQLite releases the GIL only inside each statement, so a writer thread must win the
GIL back from the busy event loop between statements (up to the 5 ms switch interval each time); under load that made
a commit of a dozen events take 10 ms. A process has its own interpreter and runs beside the event loop on its own core.

Protocol over the child's stdin/stdout: frames of a 4-byte big-endian length and a msgpack body. The parent sends
`Request`s; the child reads whatever has arrived, runs it all in ONE transaction (single jobs each in a savepoint,
all events in one bulk insert), COMMITs, and only then answers: one frame with a `Reply` per request. While it
commits, new requests queue in the pipe and ride the next commit: the busier the gateway, the bigger each commit.
The rollups are folded in beside the commits: a child process (`gateway/store/folder.py`) works each fold out on a
read connection of its own, and the serving loop writes it between two commits (`rollups.apply`), so a commit waits for
a fold's writes at most, never for its reading and summing.
When the parent goes away (stdin closes), the child finishes what it read and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import logging
import os
import select
import sqlite3
import sys
import threading
import time
from typing import Any

import msgspec

from gateway.children import start_child
from gateway.schemas import TraceIn
from gateway.store import EventRow, StoreUnavailable
from gateway.store import alerts, outbox, review, rollups, salts
from gateway.store import tables as db
from gateway.store.files import StoreFiles
from gateway.store.folder import FolderProcess
from gateway.store.frames import frame, take, write_all

log = logging.getLogger("backchannel.store")

WRITER_NICENESS = 5  # added to the gateway's; see main()


# The jobs: one Struct each, and its line in `run_job` (events are inserted many requests at once, in `_commit`).

class InsertEvents(msgspec.Struct, tag="events", array_like=True):
    project_id: int
    rows: list[EventRow[str]]


class UpsertTrace(msgspec.Struct, tag="trace", array_like=True):
    project_id: int
    trace: TraceIn


class CreateProject(msgspec.Struct, tag="project", array_like=True):
    name: str
    origins: list[str]
    require_token: bool


class AddSecretKey(msgspec.Struct, tag="add_key", array_like=True):
    project_id: int


class RevokeSecretKey(msgspec.Struct, tag="revoke_key", array_like=True):
    project_id: int
    kid: str


class SaltOfDay(msgspec.Struct, tag="salt_of_day", array_like=True):
    day: int


class Meta(msgspec.Struct, tag="meta", array_like=True):
    name: str
    default: str


Op = (InsertEvents | UpsertTrace | CreateProject | AddSecretKey | RevokeSecretKey | Meta | SaltOfDay | outbox.Job
      | review.Job | alerts.Job | rollups.Job)


def run_job(conn: sqlite3.Connection, op: Op) -> Any:
    """Run one job inside the caller's transaction; its result as msgpack carries it."""
    if isinstance(op, InsertEvents):
        return db.insert_event_batches(conn, [(op.project_id, op.rows)], {})[0]
    if isinstance(op, UpsertTrace):
        return db.upsert_trace(conn, op.project_id, op.trace)
    if isinstance(op, CreateProject):
        project, secret = db.create_project(conn, name=op.name, origins=op.origins, require_token=op.require_token)
        return [project.public_key, secret]
    if isinstance(op, AddSecretKey):
        return db.add_secret_key(conn, op.project_id)
    if isinstance(op, RevokeSecretKey):
        return db.revoke_secret_key(conn, op.project_id, op.kid)
    if isinstance(op, SaltOfDay):
        return salts.salt_of_day(conn, op.day)
    if isinstance(op, outbox.JOBS):
        return outbox.run(conn, op)
    if isinstance(op, review.JOBS):
        return review.run(conn, op)
    if isinstance(op, alerts.JOBS):
        return alerts.run(conn, op)
    if isinstance(op, rollups.JOBS):
        return rollups.run(conn, op)
    return db.meta(conn, op.name, op.default)


class Request(msgspec.Struct, array_like=True):
    id: int
    op: Op


class Reply(msgspec.Struct, array_like=True):
    id: int
    ok: bool
    result: Any = None
    error: str = ""  # "unavailable: ..." when the commit failed (nothing stored), else this job's own failure
    commit: int = 0  # which commit answered it, and that commit's size and duration, for /metrics
    events: int = 0
    seconds: float = 0.0


# --- The child ---

class _Committer:
    def __init__(self, conn: sqlite3.Connection, max_batch: int, files: StoreFiles | None = None,
                 synchronous: str = "FULL") -> None:
        self.conn = conn
        self.synchronous = db.synchronous_mode(synchronous)
        self.max_batch = max_batch
        self.files = files
        self.lost_files: str | None = None  # once the files were found replaced: why every commit is refused
        self.commits = 0
        # (project_id, trace_id) -> row of the traces known to exist (traces are never deleted, their rows never
        # change); forgotten on a rollback, which may have undone a trace seen in the failed transaction.
        self.known_traces: dict[tuple[int, str], int] = {}

    def run(self, requests: list[Request]) -> list[Reply]:
        """Commit `requests` in as few transactions as `max_batch` allows; one reply each."""
        replies, batch, weight = [], [], 0
        for request in requests:
            size = len(request.op.rows) if isinstance(request.op, InsertEvents) else 1
            if batch and weight + size > self.max_batch:
                replies += self._commit(batch, weight)
                batch, weight = [], 0
            batch.append(request)
            weight += size
        return replies + (self._commit(batch, weight) if batch else [])

    def _commit(self, batch: list[Request], weight: int) -> list[Reply]:
        conn = self.conn
        if self.lost_files is not None:
            return [Reply(r.id, False, error=f"unavailable: {self.lost_files}") for r in batch]
        started = time.perf_counter()
        results: dict[int, tuple[bool, Any]] = {}
        try:
            with db.transaction(conn):
                events = []
                for request in batch:
                    if isinstance(request.op, InsertEvents):
                        events.append(request)
                        continue
                    conn.execute("SAVEPOINT job")
                    try:
                        results[request.id] = (True, run_job(conn, request.op))
                    except (sqlite3.IntegrityError, ValueError) as exc:  # this job's own fault; its neighbours go on
                        conn.execute("ROLLBACK TO job")
                        results[request.id] = (False, str(exc))
                    conn.execute("RELEASE job")
                # After the single jobs, so an event sees a trace logged in the same commit.
                if len(self.known_traces) > 200_000:
                    self.known_traces.clear()
                if events:
                    outcomes = db.insert_event_batches(conn, [(r.op.project_id, r.op.rows) for r in events],
                                                       self.known_traces)
                    for request, outcome in zip(events, outcomes):
                        results[request.id] = (True, outcome)
        except sqlite3.Error as exc:  # the whole transaction rolled back: nothing of it is stored
            self.known_traces.clear()
            log.error("commit of %d requests failed: %s", len(batch), exc)
            return [Reply(r.id, False, error=f"unavailable: {exc}") for r in batch]
        if self.files is not None and (problem := self.files.problem()) is not None:
            return self._lose_files(batch, problem)
        self.commits += 1
        seconds = time.perf_counter() - started
        return [Reply(r.id, ok, result if ok else None, "" if ok else result, self.commits, weight, seconds)
                for r in batch for ok, result in [results[r.id]]]

    def apply(self, fold: rollups.FoldPlan) -> bool:
        """Write a fold the folder worked out, in a transaction of its own; False if it no longer holds."""
        # A fold needs no fsync of its own: the next commit's syncs the WAL up to it, and a fold lost with the
        # machine before that is folded again from the watermark it was committed with.
        if self.lost_files is not None:
            return False
        relaxed = self.synchronous in ("FULL", "EXTRA")
        try:
            if relaxed:
                self.conn.execute("PRAGMA synchronous = NORMAL")
            with db.transaction(self.conn):
                return rollups.apply(self.conn, fold)
        except sqlite3.Error as exc:  # nothing lost: the next fold folds the same events
            log.error("rollups fold failed: %s", exc)
            return False
        finally:
            if relaxed:
                self.conn.execute(f"PRAGMA synchronous = {self.synchronous}")

    def _lose_files(self, batch: list[Request], problem: str) -> list[Reply]:
        """The database or its WAL is no longer the file at its path: what this connection commits from now on
        would be lost with the process. Refuse every commit (so nothing more is acknowledged); first copy what the
        WAL this connection still holds has into the database file, which saves what was acknowledged before."""
        self.lost_files = problem
        log.error("%s: refusing every write from now on; restart the gateway once the files are back in place",
                  problem)
        _checkpoint(self.conn)
        return [Reply(r.id, False, error=f"unavailable: {problem}") for r in batch]


def serve(conn: sqlite3.Connection, max_batch: int, stdin: int = 0, stdout: int = 1,
          catch_up: threading.Event | None = None, files: StoreFiles | None = None,
          synchronous: str = "FULL", folder: FolderProcess | None = None) -> None:
    """`files`: the database and WAL `conn` opened, checked after each commit, before it is acknowledged. `folder`:
    the process that plans the rollups' folds (without one, only reads' catch-ups fold)."""
    decode = msgspec.msgpack.Decoder(Request).decode
    encode = msgspec.msgpack.Encoder().encode
    committer = _Committer(conn, max_batch, files, synchronous)
    buffer = bytearray()
    # Read into one buffer kept for good: os.read(fd, 1 MiB) would map 1 MiB and unmap it again on every read.
    space = bytearray(1 << 20)
    waiting = select.poll()
    waiting.register(stdin, select.POLLIN)
    if folder is not None:
        waiting.register(folder.start(), select.POLLIN)
    while True:
        restart = folder is not None and folder.fd < 0
        readable = False
        for fd, _ in waiting.poll(folder.due() * 1000 if restart else None):  # type: ignore[union-attr]
            if fd == stdin:
                readable = True
            elif (fold := folder.take()) is not None:  # type: ignore[union-attr]  # a plan: write it between commits
                folder.hand_back(committer.apply(fold))  # type: ignore[union-attr]
            elif folder.fd < 0:  # type: ignore[union-attr]  # the folder died
                waiting.unregister(fd)
        if restart and not folder.due():  # type: ignore[union-attr]
            waiting.register(folder.start(), select.POLLIN)  # type: ignore[union-attr]
        if not readable:
            continue
        size = os.readv(stdin, [space])  # whatever has arrived: one request or hundreds
        if not size:
            return  # the gateway closed the pipe (or died): everything read has been answered
        buffer += memoryview(space)[:size]
        requests = take(buffer, decode)
        if requests:
            write_all(stdout, frame(encode(committer.run(requests))))
        if catch_up is not None and catch_up.is_set():  # between commits, with everything read answered
            catch_up.clear()
            _checkpoint(conn)


# A writer that never pauses never lets the WAL start over (frames committed during a background checkpoint are left
# for the next one), so once the WAL holds RESTART_FRAMES the checkpointer asks the writer to catch up between two
# commits. Each catch-up syncs the database, so it is made rare: a big WAL costs disk space, not time. The
# measurements behind the numbers: docs/benchmarks.md.
RESTART_FRAMES = 65536  # 256 MiB of 4 KiB pages
AUTOCHECKPOINT_FRAMES = 131072  # the safety net: the commit path checkpoints itself past 512 MiB


def _checkpoint(conn: sqlite3.Connection) -> int:
    """A PASSIVE checkpoint (it waits for no one); returns the WAL's size in frames, or -1 if it failed."""
    try:
        return conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    except sqlite3.Error as exc:
        log.warning("checkpoint failed: %s", exc)
        return -1


def _checkpoint_forever(path: str, catch_up: threading.Event, interval: float, restart_frames: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 1000")
    while True:
        time.sleep(interval)
        if _checkpoint(conn) >= restart_frames:
            catch_up.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.store.writer")
    parser.add_argument("--db", required=True)
    parser.add_argument("--synchronous", default="FULL")
    parser.add_argument("--busy-timeout-ms", type=int, default=5000)
    parser.add_argument("--max-batch", type=int, default=2000)
    parser.add_argument("--checkpoint-interval", type=float, default=1.0, help="seconds between background checkpoints")
    parser.add_argument("--restart-frames", type=int, default=RESTART_FRAMES)
    args = parser.parse_args(argv)
    # On a stop signal the gateway stops first, then closes our stdin, and we exit after answering everything we were
    # sent: dying on the signal could abandon a commit the gateway is waiting for. When the CPU is short, the event
    # loop goes first: a request waiting to be read costs a client, while a writer that runs a little later just
    # commits a bigger batch (docs/benchmarks.md).
    start_child("writer", niceness=WRITER_NICENESS)
    conn = db.connect(args.db, synchronous=args.synchronous, busy_timeout_ms=args.busy_timeout_ms)
    # Checkpoints run beside the commits, not inside one: left to SQLite, a checkpoint runs in whichever COMMIT crosses
    # 1,000 WAL pages and stalls every request waiting on it. See RESTART_FRAMES for how the WAL still starts over.
    conn.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_FRAMES}")
    catch_up = threading.Event()
    threading.Thread(target=_checkpoint_forever, name="checkpointer", daemon=True,
                     args=(args.db, catch_up, args.checkpoint_interval, args.restart_frames)).start()
    files = StoreFiles(args.db)  # after connect: the WAL exists
    folder = FolderProcess(args.db, args.busy_timeout_ms)
    os.write(1, b"\0")  # ready: the schema is in place
    try:
        serve(conn, args.max_batch, catch_up=catch_up, files=files, synchronous=args.synchronous, folder=folder)
    finally:
        folder.close()
        conn.close()
    return 0


# --- The parent's side ---

class _Child:
    """One writer process and the requests sent to it: when it dies, exactly these fail."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        # Kept, not asked for per request: asyncio.get_running_loop() makes a getpid() system call each time.
        self.loop = asyncio.get_running_loop()
        self.pending: dict[int, asyncio.Future[Reply]] = {}  # request id -> its reply; ids only grow
        self.outbox: list[bytes] = []
        self.gone = False
        self.reader: asyncio.Task | None = None
        self.sweeper: asyncio.Task | None = None


class WriterProcess:
    """Runs the writer child and turns requests into awaitable replies. Restarts it if it dies."""

    REPLY_TIMEOUT = 30.0  # seconds; see _fail_overdue

    def __init__(self, path: str, *, synchronous: str, busy_timeout_ms: int, max_batch: int,
                 on_commit: Any, checkpoint_interval: float = 1.0, restart_frames: int = RESTART_FRAMES) -> None:
        self._argv = [sys.executable, "-m", "gateway.store.writer", "--db", path, "--synchronous", synchronous,
                      "--busy-timeout-ms", str(busy_timeout_ms), "--max-batch", str(max_batch),
                      "--checkpoint-interval", str(checkpoint_interval), "--restart-frames", str(restart_frames)]
        self._on_commit = on_commit
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder(list[Reply]).decode
        self._child: _Child | None = None
        self._next_id = 0
        self._last_commit = 0
        self._closing = False

    @property
    def alive(self) -> bool:
        child = self._child
        return child is not None and not child.gone and child.proc.returncode is None and not self._closing

    @property
    def pid(self) -> int | None:
        return self._child.proc.pid if self._child is not None else None

    async def start(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self._argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        try:
            await asyncio.wait_for(proc.stdout.readexactly(1), timeout=30)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError):
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            raise StoreUnavailable(f"the writer process did not start (exit code {proc.returncode})") from None
        child = _Child(proc)
        self._last_commit = 0
        child.reader = asyncio.create_task(self._read_replies(child), name="backchannel-writer-replies")
        child.sweeper = asyncio.create_task(self._fail_overdue(child), name="backchannel-writer-overdue")
        self._child = child

    async def call(self, op: Op) -> Any:
        """The job's result once committed; StoreUnavailable if its commit failed, ValueError if the job did."""
        child = self._child
        if self._closing or child is None or child.gone:
            raise StoreUnavailable("the store is not accepting writes")
        self._next_id += 1
        request_id = self._next_id
        future = child.pending[request_id] = child.loop.create_future()
        # Requests made in the same loop iteration go out in one write: one syscall (and one wake-up of the
        # writer) for all of them, rather than one each.
        if not child.outbox:
            child.loop.call_soon(self._send, child)
        child.outbox.append(frame(self._encode(Request(request_id, op))))
        reply = await future
        if reply.ok:
            return reply.result
        if reply.error.startswith("unavailable"):
            raise StoreUnavailable(reply.error)
        raise ValueError(reply.error)

    def _send(self, child: _Child) -> None:
        frames, child.outbox = child.outbox, []
        if frames and not child.gone and not child.proc.stdin.is_closing():
            child.proc.stdin.write(b"".join(frames))  # a broken pipe shows up as EOF on the reader's side

    async def _read_replies(self, child: _Child) -> None:
        stdout = child.proc.stdout
        buffer = bytearray()
        try:
            while chunk := await stdout.read(1 << 20):  # whatever has arrived: often the replies of a whole commit
                buffer += chunk
                for replies in take(buffer, self._decode):
                    self._answer(child, replies)
        except ConnectionError:
            pass
        # The child is gone. What it had not answered may or may not be committed: those requests fail (503) and
        # their clients retry, which their event ids make safe. Nothing more is sent to it.
        child.gone = True
        if child.sweeper is not None:
            child.sweeper.cancel()
        for future in child.pending.values():
            if not future.done():
                future.set_exception(StoreUnavailable("the writer process exited"))
        child.pending.clear()
        await child.proc.wait()
        if self._closing:
            return
        log.error("the writer process exited with %s; restarting it", child.proc.returncode)
        delay = 0.2
        while not self._closing and self._child is child:
            await asyncio.sleep(delay)
            if self._closing:
                return
            try:
                await self.start()
            except StoreUnavailable as exc:
                log.error("%s", exc)
                delay = min(delay * 2, 5.0)

    def _answer(self, child: _Child, replies: list[Reply]) -> None:
        """One frame: the replies to the requests of one or more commits."""
        pending = child.pending
        for reply in replies:
            if reply.commit != self._last_commit and reply.commit:
                self._last_commit = reply.commit
                self._on_commit(reply.events, reply.seconds)
            future = pending.pop(reply.id, None)
            if future is not None and not future.done():
                future.set_result(reply)

    async def _fail_overdue(self, child: _Child) -> None:
        """A safety net, not a deadline: a request never waits forever on a writer that stopped answering.

        Request ids only grow, so rather than a timer per request, a sweep a second notes the newest id sent so far;
        every request up to the id noted REPLY_TIMEOUT seconds ago and still unanswered is failed.
        """
        loop = asyncio.get_running_loop()
        marks: collections.deque[tuple[float, int]] = collections.deque()
        while not child.gone:
            await asyncio.sleep(1.0)
            now = loop.time()
            marks.append((now, self._next_id))
            overdue = 0
            while marks and marks[0][0] <= now - self.REPLY_TIMEOUT:
                overdue = marks.popleft()[1]
            for request_id in list(itertools.takewhile(lambda i: i <= overdue, child.pending)):
                future = child.pending.pop(request_id)
                if not future.done():
                    future.set_exception(StoreUnavailable("the writer process did not answer in time"))

    async def close(self) -> None:
        """Stop taking writes; the child answers everything it was sent, then exits."""
        self._closing = True
        child = self._child
        while child is not None:
            self._send(child)  # what was queued this loop iteration still goes out
            if not child.proc.stdin.is_closing():
                child.proc.stdin.close()
            if child.reader is not None:
                await asyncio.shield(child.reader)
            await child.proc.wait()
            child = self._child if self._child is not child else None  # a restart in flight may have swapped one in


if __name__ == "__main__":
    raise SystemExit(main())
