"""The rollups equal a full recount of the log (`rates.compute_stats`), after a randomized mix of events through the
real writer process: repeats, duplicates, vote changes, late older votes, unknown traces, re-logged traces and
flagged sessions, with catch-ups (the watermark's folds) at random points between them; commits leave the rollups
alone, the writer catches up by itself when idle, and every read counts every acknowledged event."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid

import msgspec
import pytest

from gateway.analytics.rates import StatsQuery, compute_stats
from gateway.schemas import TraceIn
from gateway.settings import Settings
from gateway.store import EventRow, create_store
from gateway.store import rollups, tables

T0 = 1_793_000_000_000  # 2026-10-26, ms
HOUR = 3_600_000
KINDS = ("shown", "shown", "feedback", "feedback", "copied", "edited", "regenerated", "rephrased", "abandoned",
         "accepted")
REASONS = (None, "too_long", "other", "wrong_information")


def random_trace(rng: random.Random, trace_id: str) -> TraceIn:
    return TraceIn(trace_id=trace_id, session_id="s", model=rng.choice(["a", "b", None]),
                   template=rng.choice(["x", "y"]), template_version=rng.choice(["v1", "v2", None]),
                   ts=T0 + rng.randrange(3 * 24 * HOUR))


def random_event(rng: random.Random, traces: list[str], sessions: list[str]) -> EventRow[uuid.UUID]:
    kind = rng.choice(KINDS)
    session = rng.choice(sessions)
    value = reason = None
    if kind == "feedback":
        value = 0 if session.startswith("down-bot") else 1 if session.startswith("up-bot") else rng.randint(0, 1)
        reason = rng.choice(REASONS) if value == 0 else None
    trace = rng.choice(traces) if rng.random() > 0.02 else "never-logged"
    return EventRow(id=uuid.UUID(int=rng.getrandbits(128), version=4), trace_id=trace, session_id=session,
                    type=kind, value=value, reason=reason, comment=None, props=None, ts=T0 + rng.randrange(50),
                    ip_hash="h")


QUERIES = [
    StatsQuery(),
    StatsQuery(include_flagged=True),
    StatsQuery(group_by=("model", "template")),
    StatsQuery(group_by=("model", "template", "template_version", "day")),
    StatsQuery(group_by=("hour",), include_flagged=True),
    StatsQuery(group_by=("template_version", "day"), from_ms=T0 + 12 * HOUR + 1234, to_ms=T0 + 50 * HOUR - 17),
    StatsQuery(group_by=("model",), from_ms=T0 + 5 * HOUR + 10, to_ms=T0 + 5 * HOUR + 30 * 60_000),
    StatsQuery(group_by=("model",), from_ms=T0 + 30 * HOUR - 1, to_ms=T0 + 31 * HOUR + 1),
    StatsQuery(model="a", outlier_min_votes=4),
    StatsQuery(template="x", from_ms=T0 + 24 * HOUR, group_by=("day",), outlier_min_votes=3),
    StatsQuery(to_ms=T0 + 36 * HOUR, group_by=("model", "hour")),
]


@pytest.mark.parametrize("seed, writer_process", [(1, True), (2, True), (3, True), (4, False)])
async def test_rollups_equal_a_full_recount(tmp_path, seed, writer_process):
    rng = random.Random(seed)
    path = str(tmp_path / "bc.db")
    store = create_store(Settings.load(environ={}, db=path), writer_process=writer_process)
    await store.open()
    try:
        project, _ = await store.create_project(name="t", origins=["*"])
        other, _ = await store.create_project(name="other", origins=["*"])
        traces = [f"t{i}" for i in range(40)]
        for trace in traces:
            await store.upsert_trace(project.id, random_trace(rng, trace))
            await store.upsert_trace(other.id, random_trace(rng, trace))  # the same trace ids in another project
        sessions = [f"s{i}" for i in range(15)] + ["down-bot", "up-bot"]
        sent: list[EventRow[uuid.UUID]] = []
        for _ in range(60):
            calls = []
            for _ in range(rng.randint(1, 6)):  # requests that ride one commit together
                rows = [random_event(rng, traces, sessions) for _ in range(rng.randint(1, 12))]
                rows += rng.sample(sent, min(len(sent), rng.randint(0, 2)))  # retries: duplicates
                sent += rows
                calls.append(store.write_events(project.id, rows))
                if rng.random() < 0.3:
                    calls.append(store.write_events(other.id, [random_event(rng, traces, sessions)]))
            if rng.random() < 0.3:  # a trace re-logged with another model, template, version or ts
                calls.append(store.upsert_trace(project.id, random_trace(rng, rng.choice(traces))))
            if rng.random() < 0.3:  # a catch-up among the commits (a read's, or the writer's own when idle)
                calls.insert(rng.randrange(len(calls) + 1), store.stats.catch_up())
            await asyncio.gather(*calls)
        # The bots' current votes are all alike on at least 10 impressions each (flagged), most likely.
        with contextlib.closing(tables.connect(path)) as conn:
            log = rollups.log_rows(conn, project.id)
        assert sum(1 for row in log if row.session_id == "down-bot" and row.type == "feedback") >= 10
        for query in QUERIES:
            expected = compute_stats(log, query)
            got = await store.stats.answer(project.id, query)
            assert msgspec.json.encode(got) == msgspec.json.encode(expected), query
        assert (await store.stats.answer(project.id, StatsQuery())).flagged_sessions >= 1
    finally:
        await store.close()


def test_an_older_file_gets_its_rollups_built_from_its_log(tmp_path):
    from tests.test_store import first_schema_file

    path = first_schema_file(tmp_path / "v1.db")
    with contextlib.closing(tables.connect(path)) as conn:  # upgraded: the rollups are backfilled from the log
        for project_id in (1, 2):
            log = rollups.log_rows(conn, project_id)
            assert log, "the first schema's file has events in both projects"
            for query in (StatsQuery(group_by=("model", "hour")), StatsQuery(include_flagged=True)):
                assert msgspec.json.encode(rollups.stats(conn, project_id, query)) == \
                    msgspec.json.encode(compute_stats(log, query))


def stored_events(rng: random.Random, count: int) -> list[EventRow[uuid.UUID]]:
    return [random_event(rng, [f"t{i}" for i in range(10)], ["s1", "s2", "s3"]) for _ in range(count)]


async def logged_project(store, rng: random.Random) -> int:
    project, _ = await store.create_project(name="t", origins=["*"])
    for i in range(10):
        await store.upsert_trace(project.id, random_trace(rng, f"t{i}"))
    return project.id


def counted(path: str, project_id: int) -> tuple[bytes, bytes, int | None]:
    """What the rollups hold now (read as they are: no catch-up), what the log says, and the watermark."""
    with contextlib.closing(tables.connect(path)) as conn:
        query = StatsQuery(group_by=("model", "hour"), include_flagged=True)
        return (msgspec.json.encode(rollups.stats(conn, project_id, query)),
                msgspec.json.encode(compute_stats(rollups.log_rows(conn, project_id), query)), rollups.watermark(conn))


async def test_commits_leave_the_rollups_alone_and_a_read_catches_up(tmp_path):
    path = str(tmp_path / "bc.db")
    store = create_store(Settings.load(environ={}, db=path), writer_process=False)  # no writer to catch up by itself
    await store.open()
    try:
        rng = random.Random(5)
        project_id = await logged_project(store, rng)
        assert "accepted" in await store.write_events(project_id, stored_events(rng, 50))
        held, recount, folded = counted(path, project_id)
        assert folded == 0 and held != recount and b'"shown":0' not in recount
        answer = await store.stats.answer(project_id, StatsQuery(group_by=("model", "hour"), include_flagged=True))
        held, recount, folded = counted(path, project_id)
        assert held == recount == msgspec.json.encode(answer) and folded > 0
        assert await store.stats.catch_up() == 0  # nothing new
    finally:
        await store.close()


async def test_the_writer_catches_up_by_itself_when_idle(tmp_path):
    path = str(tmp_path / "bc.db")
    store = create_store(Settings.load(environ={}, db=path))
    await store.open()
    try:
        rng = random.Random(6)
        project_id = await logged_project(store, rng)
        await store.write_events(project_id, stored_events(rng, 50))
        deadline = time.monotonic() + 10
        while (found := counted(path, project_id))[0] != found[1]:
            assert time.monotonic() < deadline, "the writer did not fold the events in"
            await asyncio.sleep(0.02)
    finally:
        await store.close()


async def test_the_writer_catches_up_under_continuous_writes(tmp_path):
    # Writes closer together than FOLD_IDLE: the writer is never idle, so the rollups move at FOLD_EVERY at the latest.
    path = str(tmp_path / "bc.db")
    store = create_store(Settings.load(environ={}, db=path))
    await store.open()
    try:
        rng = random.Random(8)
        project_id = await logged_project(store, rng)
        deadline = time.monotonic() + 20
        while not (counted(path, project_id)[2] or 0) > 0:
            assert time.monotonic() < deadline, "the rollups did not move while events kept coming"
            await store.write_events(project_id, stored_events(rng, 1))
            await asyncio.sleep(0.005)
    finally:
        await store.close()


async def test_a_file_whose_rollups_were_kept_in_each_commit_gets_a_watermark_at_its_last_event(tmp_path):
    path = str(tmp_path / "bc.db")
    rng = random.Random(7)
    store = create_store(Settings.load(environ={}, db=path), writer_process=False)
    await store.open()
    project_id = await logged_project(store, rng)
    await store.write_events(project_id, stored_events(rng, 40))
    await store.stats.catch_up()
    await store.close()
    with contextlib.closing(tables.connect(path)) as conn:  # as such a file is: up to date, without the row
        conn.execute("DELETE FROM meta WHERE name = 'rollups_folded'")
    store = create_store(Settings.load(environ={}, db=path))
    await store.open()
    try:
        await store.write_events(project_id, stored_events(rng, 40))
        answer = await store.stats.answer(project_id, StatsQuery(group_by=("model", "hour"), include_flagged=True))
        held, recount, folded = counted(path, project_id)
        assert held == recount == msgspec.json.encode(answer)
    finally:
        await store.close()


@pytest.mark.parametrize("slice_", [1, 7, 64])
def test_folds_planned_in_slices_end_where_one_whole_catch_up_does(tmp_path, slice_):
    # The writer's folder plans a slice on a snapshot and the serving loop applies it: slice after slice, the
    # rollups end equal to the recount, as after one catch-up.
    path, project_id, last = _stored_log(tmp_path, slice_)
    with contextlib.closing(tables.connect(path)) as conn:
        for first in range(0, last, slice_):
            fold = rollups.plan(conn, first, min(last, first + slice_))
            with tables.transaction(conn):
                assert rollups.apply(conn, fold)
            assert rollups.watermark(conn) == min(last, first + slice_)
    held, recount, folded = counted(path, project_id)
    assert held == recount and folded == last


def test_a_fold_takes_the_current_vote_and_folding_the_vote_after_it_changes_nothing(tmp_path):
    path = str(tmp_path / "bc.db")
    with contextlib.closing(tables.connect(path)) as conn:
        with tables.transaction(conn):
            project, _ = tables.create_project(conn, name="t", origins=["*"])
            tables.upsert_trace(conn, project.id, TraceIn(trace_id="t0", session_id="s", model="m", ts=T0))

        def vote(value: int, ts: int, reason: str | None = None) -> EventRow[str]:
            return EventRow(id=str(uuid.uuid4()), trace_id="t0", session_id="s1", type="feedback", value=value,
                            reason=reason, comment=None, props=None, ts=ts, ip_hash="h")

        with tables.transaction(conn):  # up, then down, then a late retry of an older up (the votes table keeps down)
            tables.insert_event_batches(conn, [(project.id, [vote(1, T0 + 10), vote(0, T0 + 20, "too_long"),
                                                              vote(1, T0 + 15)])], {})
        first = rollups.plan(conn, 0, 1)  # only the up vote's event, but the impression's vote is the current one
        assert [row[6:] for row in first.inserts] == [(0, T0 + 20, "too_long")]
        with tables.transaction(conn):
            assert rollups.apply(conn, first)
        for seq in (2, 3):
            rest = rollups.plan(conn, seq - 1, seq)
            assert (rest.inserts, rest.updates, rest.hours, rest.reasons) == ([], [], [], [])
            with tables.transaction(conn):
                assert rollups.apply(conn, rest)
    held, recount, folded = counted(path, project.id)
    assert held == recount and folded == 3 and b'"feedback_down":{"count":1' in held


def test_a_plan_is_refused_once_a_catch_up_or_a_moved_impression_came_between(tmp_path):
    path, project_id, last = _stored_log(tmp_path, 3)
    with contextlib.closing(tables.connect(path)) as conn:
        stale = rollups.plan(conn, 0, last // 2)
        with tables.transaction(conn):
            rollups.catch_up(conn)  # a read's catch-up: the watermark moved past the plan's start
        with tables.transaction(conn):
            assert not rollups.apply(conn, stale)
    held, recount, folded = counted(path, project_id)
    assert held == recount and folded == last  # the refused plan wrote nothing

    path, project_id, last = _stored_log(tmp_path / "again", 4)
    with contextlib.closing(tables.connect(path)) as conn:
        with tables.transaction(conn):
            assert rollups.apply(conn, rollups.plan(conn, 0, last // 2))
        stale = rollups.plan(conn, last // 2, last)
        moved = TraceIn(trace_id="t0", session_id="s", model="moved", template="x", ts=T0 + 90 * HOUR)
        with tables.transaction(conn):
            tables.upsert_trace(conn, project_id, moved)  # re-logged: its folded impressions move
        with tables.transaction(conn):
            assert not rollups.apply(conn, stale)  # it knew them where they were
            assert rollups.apply(conn, rollups.plan(conn, last // 2, last))
    held, recount, folded = counted(path, project_id)
    assert held == recount and folded == last and b'"moved"' in held


def test_a_plan_is_refused_once_its_trace_was_relogged_even_with_no_impression_to_move(tmp_path):
    # The plan adds t0's first impressions where t0 counted when it was planned; t0 is re-logged before it is applied.
    path, project_id, last = _stored_log(tmp_path, 5)
    with contextlib.closing(tables.connect(path)) as conn:
        stale = rollups.plan(conn, 0, last)
        moved = TraceIn(trace_id="t0", session_id="s", model="moved", template="x", ts=T0 + 90 * HOUR)
        with tables.transaction(conn):
            tables.upsert_trace(conn, project_id, moved)
        with tables.transaction(conn):
            assert not rollups.apply(conn, stale)
            rollups.catch_up(conn)
    held, recount, folded = counted(path, project_id)
    assert held == recount and folded == last and b'"moved"' in held


def test_plan_next_bounds_the_impressions_a_plan_writes_and_sizes_the_next_span(tmp_path, monkeypatch):
    path, project_id, last = _stored_log(tmp_path, 13)
    monkeypatch.setattr(rollups, "PLAN_ROWS", 8)
    with contextlib.closing(tables.connect(path)) as conn:
        impressions = conn.execute("SELECT count(*) FROM (SELECT DISTINCT trace, session_id FROM events)").fetchone()[0]
        assert impressions > 3 * rollups.PLAN_ROWS  # so the plans below must be cut
        span, plans = last, 0
        while (step := rollups.plan_next(conn, last, span))[0] is not None:
            fold, span = step
            written = len(fold.inserts) + len(fold.updates)
            assert 0 < fold.touched <= rollups.PLAN_ROWS and written <= fold.touched
            with tables.transaction(conn):
                assert rollups.apply(conn, fold)
            plans += 1
        assert plans >= impressions // rollups.PLAN_ROWS and rollups.watermark(conn) == last
        assert rollups.plan_next(conn, last, 10)[0] is None  # nothing left
    held, recount, folded = counted(path, project_id)
    assert held == recount and folded == last


def test_plan_next_doubles_a_span_that_cut_a_small_plan_short(tmp_path):
    path, project_id, last = _stored_log(tmp_path, 14)
    with contextlib.closing(tables.connect(path)) as conn:
        fold, span = rollups.plan_next(conn, last, 10)
        assert (fold.first, fold.last, span) == (0, 10, 20)  # 10 events wrote far fewer than PLAN_ROWS / 2
        fold, span = rollups.plan_next(conn, 5, 10)  # reached the target: the span stays
        assert (fold.first, fold.last, span) == (0, 5, 10)
        fold, span = rollups.plan_next(conn, last, rollups.MAX_SPAN)
        assert (fold.last, span) == (last, rollups.MAX_SPAN)


async def test_a_reads_catch_up_plans_beside_the_writer_and_folds_the_rest_under_its_lock(tmp_path, monkeypatch):
    # The read's own plans (Fold) go to the writer, then a CatchUp; what the writer ran is what it was sent.
    path = str(tmp_path / "bc.db")
    store = create_store(Settings.load(environ={}, db=path), writer_process=False)
    await store.open()
    try:
        rng = random.Random(15)
        project_id = await logged_project(store, rng)
        await store.write_events(project_id, stored_events(rng, 300))
        monkeypatch.setattr(rollups, "PLAN_ROWS", 10)
        sent = []
        write = store.stats._write

        async def recording(job):
            sent.append(job)
            return await write(job)

        store.stats._write = recording
        moved = await store.stats.catch_up()
        folds = [job for job in sent if isinstance(job, rollups.Fold)]
        assert len(folds) >= 2 and isinstance(sent[-1], rollups.CatchUp) and len(sent) == len(folds) + 1
        assert [fold.plan.first for fold in folds[1:]] == [fold.plan.last for fold in folds[:-1]]
        held, recount, folded = counted(path, project_id)
        assert held == recount and folded == moved == folds[-1].plan.last
        sent.clear()
        assert await store.stats.catch_up() == 0 and [type(job) for job in sent] == [rollups.CatchUp]
    finally:
        await store.close()


def _stored_log(tmp_path, seed: int) -> tuple[str, int, int]:
    """A store with events of 10 traces (t0 among them, with impressions), none folded; its path, project, last seq."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = str(tmp_path / "bc.db")
    conn = tables.connect(path)
    try:
        rng = random.Random(seed)
        with tables.transaction(conn):
            project, _ = tables.create_project(conn, name="t", origins=["*"])
            for i in range(10):
                tables.upsert_trace(conn, project.id, random_trace(rng, f"t{i}"))
        rows = [msgspec.convert(msgspec.to_builtins(row), EventRow[str]) for row in stored_events(rng, 200)]
        rows[0].trace_id = "t0"
        with tables.transaction(conn):
            tables.insert_event_batches(conn, [(project.id, rows)], {})
        return path, project.id, rollups.last_seq(conn)
    finally:
        conn.close()


def test_a_plan_crosses_the_pipe_as_it_was_planned(tmp_path):
    # The folder process sends each plan to the writer as msgpack: what arrives is the plan, and applies as it would.
    path, project_id, last = _stored_log(tmp_path, 11)
    with contextlib.closing(tables.connect(path)) as conn:
        with tables.transaction(conn):
            assert rollups.apply(conn, rollups.plan(conn, 0, last // 2))  # so the next plan updates impressions too
        fold = rollups.plan(conn, last // 2, last)
        assert fold.inserts and fold.updates and fold.hours and fold.reasons
        assert any(type(row[0]) is tuple for row in fold.hours)  # a new group, still a label
        arrived = msgspec.msgpack.decode(msgspec.msgpack.encode(fold), type=rollups.FoldPlan)
        assert arrived == fold
        with tables.transaction(conn):
            assert rollups.apply(conn, arrived)
    held, recount, folded = counted(path, project_id)
    assert held == recount and folded == last


def test_the_writer_applies_a_fold_in_a_transaction_of_its_own_and_keeps_its_synchronous_setting(tmp_path):
    from gateway.store.writer import _Committer

    path, project_id, last = _stored_log(tmp_path, 12)
    conn = tables.connect(path, synchronous="FULL")
    try:
        committer = _Committer(conn, max_batch=1000, synchronous="FULL")
        fold = rollups.plan(conn, 0, last)
        assert committer.apply(fold)  # written without a sync of its own: the next commit's covers it
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again for the next commit
        assert not committer.apply(fold)  # the same plan twice: refused, the watermark has moved
        assert rollups.watermark(conn) == last and not conn.in_transaction
    finally:
        conn.close()
    held, recount, folded = counted(path, project_id)
    assert held == recount and folded == last
