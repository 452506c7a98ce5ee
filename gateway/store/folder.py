"""The rollups' folder: a child process of the writer that works out each fold (`rollups.plan`) on a read-only
connection of its own, so the writer only writes it (`rollups.apply`), between two commits.

Why a process: working out a fold reads a second's events and the impressions they touch, and compares them in
Python. In a thread of the writer that took the GIL the writer's serving loop needs back after every SQLite step; here
it competes for a core only, and in Linux's idle scheduling class (`children.start_child`): any wake-up of the writer
or the gateway preempts it at once (a niced process would finish its time slice first, and every request behind the
writer would wait). When the cores are short, the rollups fall behind, which costs nothing but a longer catch-up at the
next read (`rollups.Stats`). Measurements: docs/benchmarks.md.

Pacing: the folder looks at the log every FOLD_IDLE. A fold starts once no event was committed since the last look, or
FOLD_EVERY after it first saw events the rollups lack: under load, a few seconds' events at a time, in which an
impression touched many times is read and written once (a fold's cost is mostly per impression it touches; a read
meanwhile plans what is not folded yet itself, beside the commits: `rollups.Stats`). Each plan touches
`rollups.PLAN_ROWS` impressions at most (`rollups.plan_next`), which bounds its memory and the writer's pause.

Protocol: the child writes each plan to its stdout as a frame (`frames`), then waits for the writer's answer on its
stdin: one byte, 1 if the writer applied the plan, 0 if the plan no longer held (a read's catch-up or a re-logged trace
came between; the next look plans again from the watermark). When its stdin closes (the writer went away), it exits.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import sqlite3
import subprocess
import sys
import time

import msgspec

from gateway.children import start_child
from gateway.store import rollups
from gateway.store.frames import frame, take, write_all

log = logging.getLogger("backchannel.store")

FOLD_IDLE = 0.05  # seconds
FOLD_EVERY = 5.0
RESTART_AFTER = 1.0  # seconds before a folder that died is started again
READ_SIZE = 1 << 16  # bytes of a plan the writer reads at a time

APPLIED, REFUSED = b"\1", b"\0"


# --- The child ---

def serve(conn: sqlite3.Connection, stdin: int = 0, stdout: int = 1, idle: float = FOLD_IDLE,
          every: float = FOLD_EVERY) -> None:
    """Fold until the writer closes `stdin`."""
    encode = msgspec.msgpack.Encoder().encode
    waiting = select.poll()
    waiting.register(stdin, select.POLLIN)
    behind_since: float | None = None  # when the rollups were first seen to lack events
    seen = -1  # the last seq at the previous look
    span = rollups.FIRST_SPAN
    while True:
        # The writer sends nothing while no plan is out: stdin turning readable is its end.
        if waiting.poll(idle * 1000) and not os.read(stdin, 1):
            return
        try:
            first, last = _look(conn)
        except sqlite3.Error as exc:  # the next look tries again; meanwhile reads catch up by themselves
            log.error("the rollups folder could not read the store: %s", exc)
            time.sleep(every)
            continue
        if first is None or first >= last:  # nothing to fold (None: the store sets the watermark when it opens)
            behind_since, seen = None, last
            continue
        now = time.monotonic()
        behind_since = now if behind_since is None else behind_since
        if last != seen and now - behind_since < every:  # events still coming: gather
            seen = last
            continue
        seen, behind_since = last, None
        try:
            while (step := rollups.plan_next(conn, last, span))[0] is not None:
                fold, span = step
                write_all(stdout, frame(encode(fold)))
                answer = os.read(stdin, 1)
                if not answer:
                    return
                if answer != APPLIED:
                    break
        except sqlite3.Error as exc:
            log.error("the rollups folder could not plan a fold: %s", exc)
            time.sleep(every)


def _look(conn: sqlite3.Connection) -> tuple[int | None, int]:
    """The watermark and the last seq, on one snapshot."""
    with rollups.snapshot(conn):
        return rollups.watermark(conn), rollups.last_seq(conn)


def connect(path: str, busy_timeout_ms: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA query_only = 1")
    conn.execute("PRAGMA cache_size = -65536")
    conn.execute("PRAGMA temp_store = MEMORY")
    return conn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.store.folder")
    parser.add_argument("--db", required=True)
    parser.add_argument("--busy-timeout-ms", type=int, default=5000)
    args = parser.parse_args(argv)
    start_child("rollups folder", idle=True)
    conn = connect(args.db, args.busy_timeout_ms)
    try:
        serve(conn)
    except BrokenPipeError:  # the writer went away while a plan was on its way
        pass
    finally:
        conn.close()
    return 0


# --- The writer's side ---

class FolderProcess:
    """The folder child as the writer's serving loop drives it: poll `fd`, `take` what arrived, and once that is a
    whole plan, `hand_back` whether it was applied. If the child dies, `fd` turns -1 and `due` says when to `start`
    another."""

    def __init__(self, path: str, busy_timeout_ms: int) -> None:
        self._argv = [sys.executable, "-m", "gateway.store.folder", "--db", path,
                      "--busy-timeout-ms", str(busy_timeout_ms)]
        self._decode = msgspec.msgpack.Decoder(rollups.FoldPlan).decode
        self._proc: subprocess.Popen[bytes] | None = None
        self._buffer = bytearray()  # a plan as it arrives: the child may be stopped halfway through writing it
        self._started = 0.0
        self.fd = -1  # the child's stdout, -1 while none runs

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> int:
        """Start a child; its stdout, to poll."""
        self._proc = subprocess.Popen(self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self._started = time.monotonic()
        self._buffer = bytearray()
        self.fd = self._proc.stdout.fileno()  # type: ignore[union-attr]
        return self.fd

    def due(self) -> float:
        """Seconds until a child that died may be started again (0: now)."""
        return max(0.0, self._started + RESTART_AFTER - time.monotonic())

    def take(self) -> rollups.FoldPlan | None:
        """Read what the child sent, without blocking (call it when `fd` is readable): the plan once all of it is in,
        else None. A child that is gone, or sent something that is not a plan, is stopped, and `fd` is then -1."""
        chunk = os.read(self.fd, READ_SIZE)
        if chunk:
            self._buffer += chunk
            try:
                plans = take(self._buffer, self._decode)
            except msgspec.DecodeError as exc:
                log.error("the rollups folder sent something that is not a plan: %s", exc)
            else:
                if len(plans) <= 1:  # the child waits for the answer to each plan before it sends another
                    return plans[0] if plans else None
                log.error("the rollups folder sent a plan before its last one was answered")
        self._gone()
        return None

    def hand_back(self, applied: bool) -> None:
        try:
            write_all(self._proc.stdin.fileno(), APPLIED if applied else REFUSED)  # type: ignore[union-attr]
        except OSError:  # it died meanwhile: the next poll sees its stdout close
            pass

    def _gone(self) -> None:
        proc, self._proc, self.fd = self._proc, None, -1
        if proc is None:
            return
        proc.kill()
        returncode = proc.wait()
        proc.stdin.close()  # type: ignore[union-attr]
        proc.stdout.close()  # type: ignore[union-attr]
        log.error("the rollups folder exited with %s; it is started again in %.0f s", returncode, self.due())

    def close(self) -> None:
        """Stop the child: it sees its stdin close and exits."""
        proc, self._proc, self.fd = self._proc, None, -1
        if proc is None:
            return
        proc.stdin.close()  # type: ignore[union-attr]
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]


if __name__ == "__main__":
    raise SystemExit(main())
