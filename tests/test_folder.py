"""The rollups' folder process (gateway/store/folder.py): it plans each fold on its own connection and the caller
applies it; a refused plan is planned again; it runs in the idle scheduling class, goes away with the writer, and the
writer starts another when one dies."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import select
import signal
import sys
import time
from pathlib import Path

import msgspec

from gateway.settings import Settings
from gateway.store import create_store, rollups, tables
from gateway.store.folder import FolderProcess
from gateway.store.frames import frame
from tests.test_rollups import _stored_log, counted, logged_project, stored_events


def next_plan(folder: FolderProcess, timeout: float = 10.0) -> rollups.FoldPlan:
    """The next whole plan the folder sends (`take` hands over what has arrived, a plan once all of it is in)."""
    waiting = select.poll()
    waiting.register(folder.fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0 and waiting.poll(left * 1000), "the folder sent no plan"
        if (plan := folder.take()) is not None:
            return plan
        assert folder.fd >= 0, "the folder went away"


def idle_class(pid: int) -> bool:
    """Whether the process runs in Linux's idle scheduling class: any wake-up of another process preempts it."""
    return os.sched_getscheduler(pid) == os.SCHED_IDLE


def children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def wait_until(predicate, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, what
        time.sleep(0.02)
    return found


def test_the_folder_plans_what_the_writer_applies_and_plans_again_after_a_refusal(tmp_path):
    path, project_id, last = _stored_log(tmp_path, 21)
    folder = FolderProcess(path, busy_timeout_ms=5000)
    folder.start()
    try:
        with contextlib.closing(tables.connect(path)) as conn:
            refused = next_plan(folder)
            assert idle_class(folder.pid)  # set before it plans
            assert (refused.first, refused.last) == (0, last)
            folder.hand_back(False)  # as the writer answers a plan that no longer holds: nothing written
            again = next_plan(folder)
            assert again == refused and rollups.watermark(conn) == 0
            with tables.transaction(conn):
                assert rollups.apply(conn, again)
            folder.hand_back(True)
        held, recount, folded = counted(path, project_id)
        assert held == recount and folded == last
    finally:
        folder.close()
    assert folder.fd == -1


def test_a_folder_stopped_halfway_through_a_plan_does_not_hold_up_the_writer(tmp_path):
    path, _, _ = _stored_log(tmp_path, 23)
    with contextlib.closing(tables.connect(path)) as conn:
        plan = rollups.plan(conn, 0, rollups.last_seq(conn))
    sent = frame(msgspec.msgpack.encode(plan))
    # A stand-in child: half of the plan, then the rest once it is answered (or after 10 s: a `take` that waits for
    # the rest returns the plan then, and fails the first assertion below instead of hanging the test).
    child = ("import os, select, sys; sent = bytes.fromhex(sys.argv[1]); os.write(1, sent[:len(sent) // 2]);"
             " select.select([0], [], [], 10)[0] and os.read(0, 1); os.write(1, sent[len(sent) // 2:]); os.read(0, 1)")
    folder = FolderProcess(path, busy_timeout_ms=5000)
    folder._argv = [sys.executable, "-c", child, sent.hex()]
    folder.start()
    try:
        waiting = select.poll()
        waiting.register(folder.fd, select.POLLIN)
        assert waiting.poll(10_000)
        assert folder.take() is None and folder.fd >= 0  # half a plan: nothing to apply yet, and no wait for more
        folder.hand_back(True)  # the stand-in's cue for the rest
        assert next_plan(folder) == plan
    finally:
        folder.close()


async def test_the_folder_goes_away_with_its_writer_and_the_writer_starts_another_when_it_dies(tmp_path):
    path = str(tmp_path / "bc.db")
    store = create_store(Settings.load(environ={}, db=path))
    await store.open()
    try:
        rng = random.Random(22)
        project_id = await logged_project(store, rng)
        writer = store.writer_pid
        [first] = wait_until(lambda: children(writer), "the writer started no folder")
        wait_until(lambda: idle_class(first), "the folder did not lower its priority")

        os.kill(first, signal.SIGKILL)
        [second] = wait_until(lambda: [c for c in children(writer) if c != first], "no folder after the first died",
                              timeout=15)
        await store.write_events(project_id, stored_events(rng, 30))
        deadline = time.monotonic() + 10
        while (found := counted(path, project_id))[0] != found[1]:  # the new one folds them in, with no read asking
            assert time.monotonic() < deadline, "the second folder did not fold the events in"
            await asyncio.sleep(0.02)
        with contextlib.closing(tables.connect(path)) as conn:
            assert found[2] == rollups.last_seq(conn) > 0

        os.kill(writer, signal.SIGKILL)  # the folder sees its stdin close and exits (reaped by init: poll /proc)
        wait_until(lambda: not Path(f"/proc/{second}").exists()
                   or Path(f"/proc/{second}/stat").read_text().rpartition(")")[2].split()[0] == "Z",
                   "the folder outlived its writer")
    finally:
        await store.close()
