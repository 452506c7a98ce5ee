"""The delivery worker in a process of its own: sending to destinations never takes the gateway's event loop (nor its
GIL) from ingest, and the child runs at the lowest priority (`children.start_child`), so when the cores are short,
ingest goes first and the queues wait a little longer.

The child runs `worker.Worker` as is. It reads the queues on a read-only connection of its own (WAL lets it read beside
the writer) and sends its writes (delivery outcomes, the lease) to the gateway, which hands them to the writer: the
writer stays the only process that writes. The gateway starts the child once a destination exists, restarts it if it
dies, and stops it first at shutdown (so it can give the lease back).

Protocol over the child's stdin/stdout: frames (`gateway/store/frames.py`, as the writer's pipes) of a msgpack message
each. Parent → child: `Start` (first: the settings, so the encryption key never shows in the process list), `Answer` (to
a `Call`), `Wake`, `Stop`. Child → parent: `Call` (a write), `Progress` (for /metrics and `GET /v1/destinations/{id}`).
When the gateway goes away (the pipe closes), the child exits: what it had in flight stays queued and is resent.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import msgspec
from prometheus_client.core import Metric

from gateway import tasks
from gateway.backoff import Backoff
from gateway.children import start_child
from gateway.forwarding.crypto import Vault
from gateway.forwarding.worker import Progress, Worker, metrics_of
from gateway.store import StoreUnavailable, tables
from gateway.store.outbox import DropLease, Outbox, Outcomes, TakeLease
from gateway.store.frames import FRAME_LENGTH, frame

log = logging.getLogger("backchannel.forwarding")

PROGRESS_EVERY = 0.5  # seconds between the child's `Progress` messages
RESTART_AFTER = 1.0  # seconds before a child that died is started again
STOP_TIMEOUT = 10.0  # seconds a stopping child gets to give the lease back before it is killed


class Start(msgspec.Struct, tag="start", array_like=True):
    db: str
    busy_timeout_ms: int
    encryption_key: str | None
    concurrency: int
    timeout: float
    max_backoff: float


class Answer(msgspec.Struct, tag="answer", array_like=True):
    id: int
    ok: bool
    result: Any = None
    error: str = ""


class Wake(msgspec.Struct, tag="wake", array_like=True):
    pass


class Stop(msgspec.Struct, tag="stop", array_like=True):
    pass


class Call(msgspec.Struct, tag="call", array_like=True):
    id: int
    job: Outcomes | TakeLease | DropLease  # the only writes a delivery process may ask for


class ProgressMessage(msgspec.Struct, tag="progress", array_like=True):
    progress: Progress


_encode = msgspec.msgpack.Encoder().encode
_decode_from_parent = msgspec.msgpack.Decoder(Start | Answer | Wake | Stop).decode
_decode_from_child = msgspec.msgpack.Decoder(Call | ProgressMessage).decode


def _frame(message: msgspec.Struct) -> bytes:
    return frame(_encode(message))


async def _read_frame(stream: asyncio.StreamReader) -> bytes | None:
    """The next frame's body, or None once the other side has closed the pipe."""
    try:
        (length,) = FRAME_LENGTH.unpack(await stream.readexactly(FRAME_LENGTH.size))
        return await stream.readexactly(length)
    except asyncio.IncompleteReadError:
        return None


# --- The gateway's side ---

class DeliveryProcess:
    """The delivery worker as the gateway drives it: `start()` in its lifespan, `wake()`, `stop()` at shutdown, and
    `leading` / `in_flight` / `collect()` from the child's last `Progress`."""

    def __init__(self, outbox: Outbox, start: Start, *, poll: float = 0.5) -> None:
        self.outbox = outbox
        self._start = start
        self.poll = poll
        self.last_progress = Progress()
        self._task: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._calls: set[asyncio.Task[None]] = set()

    @property
    def leading(self) -> bool:
        return self.last_progress.leading

    @property
    def in_flight(self) -> dict[str, int]:
        return self.last_progress.in_flight

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    def collect(self) -> Iterator[Metric]:
        return metrics_of(self.last_progress, time.time())

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._supervise(), name="backchannel-forwarding")

    def wake(self) -> None:
        """Look at the outbox now (e.g. after `retry-dead`, or a destination added)."""
        self._wake.set()
        self._send(Wake())

    async def stop(self) -> None:
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            self._send(Stop())
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except asyncio.TimeoutError:
                log.warning("the delivery process did not stop in %.0f s; killing it", STOP_TIMEOUT)
                proc.kill()
                await proc.wait()
        await tasks.cancel(self._task)
        self._task = None
        for call in list(self._calls):
            await tasks.cancel(call)
        self.last_progress = Progress()

    def _send(self, message: msgspec.Struct) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None and proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.write(_frame(message))

    async def _supervise(self) -> None:
        while not self._stopping:
            try:
                if not await self.outbox.any():  # no destination yet: no process either
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), self.poll)
                    except asyncio.TimeoutError:
                        pass
                    continue
                await self._run_child()
            except asyncio.CancelledError:
                raise
            except Exception:  # a store hiccup, or the child could not start: try again soon
                log.exception("the delivery process failed")
            if not self._stopping:
                await asyncio.sleep(RESTART_AFTER)

    async def _run_child(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.forwarding.process", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE)
        self._proc = proc
        try:
            self._send(self._start)
            assert proc.stdout is not None
            while (body := await _read_frame(proc.stdout)) is not None:
                message = _decode_from_child(body)
                if isinstance(message, ProgressMessage):
                    self.last_progress = message.progress
                else:
                    call = asyncio.create_task(self._answer(message))
                    self._calls.add(call)
                    call.add_done_callback(self._calls.discard)
        finally:
            if proc.returncode is None:
                proc.kill()
            code = await proc.wait()
            self._proc = None
            self.last_progress = Progress()
            if not self._stopping:
                log.error("the delivery process exited with %s; starting it again", code)

    async def _answer(self, call: Call) -> None:
        job = call.job
        try:
            if isinstance(job, Outcomes):
                result = await self.outbox.record_outcomes(job)
            elif isinstance(job, TakeLease):
                result = await self.outbox.take_lease(job.holder, job.ttl)
            else:
                result = await self.outbox.drop_lease(job.holder)
        except Exception as exc:  # the child's write fails (and is tried again there); it never waits for nothing
            if not isinstance(exc, StoreUnavailable):
                log.exception("a write of the delivery process failed")
            self._send(Answer(call.id, False, error=str(exc)))
        else:
            self._send(Answer(call.id, True, result))


# --- The child ---

class _Parent:
    """The child's end of the pipes: writes go up as `Call`s and come back as `Answer`s."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.WriteTransport) -> None:
        self.reader = reader
        self.writer = writer
        self._next_id = 0
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self.gone = False

    def send(self, message: msgspec.Struct) -> None:
        if not self.writer.is_closing():
            self.writer.write(_frame(message))

    async def write(self, job: Outcomes | TakeLease | DropLease) -> Any:
        if self.gone:
            raise StoreUnavailable("the gateway has gone away")
        self._next_id += 1
        future = asyncio.get_running_loop().create_future()
        self._waiting[self._next_id] = future
        self.send(Call(self._next_id, job))
        return await future

    def answer(self, answer: Answer) -> None:
        future = self._waiting.pop(answer.id, None)
        if future is None or future.done():
            return
        if answer.ok:
            future.set_result(answer.result)
        else:
            future.set_exception(StoreUnavailable(answer.error))

    def lost(self) -> None:
        self.gone = True
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(StoreUnavailable("the gateway has gone away"))
        self._waiting.clear()


async def _child() -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout)
    body = await _read_frame(reader)
    if body is None:
        return 0
    start = _decode_from_parent(body)
    if not isinstance(start, Start):
        log.error("the delivery process expected its settings first")
        return 2
    parent = _Parent(reader, transport)
    thread = ThreadPoolExecutor(1, thread_name_prefix="backchannel-delivery-reads")
    conn = await loop.run_in_executor(thread, functools.partial(
        tables.connect, start.db, busy_timeout_ms=start.busy_timeout_ms))
    conn.execute("PRAGMA query_only = 1")

    def read(call: Any, *args: Any) -> asyncio.Future[Any]:
        return loop.run_in_executor(thread, functools.partial(call, conn, *args))

    worker = Worker(Outbox(read, parent.write), Vault(start.encryption_key) if start.encryption_key else None,
                    concurrency=start.concurrency, timeout=start.timeout, backoff=Backoff(cap=start.max_backoff))
    worker.start()

    async def report() -> None:
        while True:
            parent.send(ProgressMessage(worker.progress()))
            await asyncio.sleep(PROGRESS_EVERY)

    reporter = asyncio.create_task(report())
    try:
        while (body := await _read_frame(reader)) is not None:
            message = _decode_from_parent(body)
            if isinstance(message, Answer):
                parent.answer(message)
            elif isinstance(message, Wake):
                worker.wake()
            elif isinstance(message, Stop):
                break
        else:
            parent.lost()  # the gateway died: nothing can be recorded; the lease runs out by itself
        # Stop: give the lease back (a write the parent still answers), then go.
        stopping = asyncio.create_task(worker.stop())
        while not stopping.done():
            reading = asyncio.create_task(_read_frame(reader))
            await asyncio.wait({stopping, reading}, return_when=asyncio.FIRST_COMPLETED)
            if reading.done():
                if (body := reading.result()) is None:
                    parent.lost()
                    await stopping
                    break
                if isinstance(message := _decode_from_parent(body), Answer):
                    parent.answer(message)
            else:
                reading.cancel()
    finally:
        await tasks.cancel(reporter)
        conn.close()
        thread.shutdown()
    return 0


def main() -> int:
    start_child("delivery process", idle=True)  # the gateway stops us (`Stop`) in its own time
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request sent, URL and all (see gateway.cli)
    return asyncio.run(_child())


if __name__ == "__main__":
    raise SystemExit(main())
