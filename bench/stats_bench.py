"""Time `/v1/stats` and a drift-detector pass on a store holding about 1,000,000 events across 30 days.

    .venv/bin/python bench/stats_bench.py [--events 1000000] [--days 30] [--runs 9] [--db PATH] [--keep] [--check]

1. Seeds a fresh database through the `Store` interface with the demo's simulated traffic (`gateway.demo_history`:
   2 models × 2 templates, implicit signals, votes, outlier sessions), scaled to --events over --days days; the
   writer folds the events into the rollups behind its watermark, as it does under ingest.
2. Times one detector pass over every stream (`AlertWorker.pass_project`: read the state, the last completed hour's
   rollups, advance every (model × template) and whole-project stream × watched signal, save state and alerts), the
   state put back before each run; and, once, the first pass over the whole history.
3. Serves the gateway in-process (its lifespan runs: writer process, drift task) and times
   `GET /v1/stats?group_by=model,template,day` over the whole range through HTTP (httpx on the ASGI app: auth,
   parsing, the store read, encoding), --runs times after one warm-up; and the same with `include_flagged=true`.
4. Times the catch-up a read waits for when the rollups lag: --backlog events (about a second of the heaviest ingest
   benchmark), each a new impression on a seeded trace, then `store.stats.catch_up()`, --catch-up-runs times, and how
   much of it the writer's jobs took (the part that holds its lock). What the rollups cost a commit:
   bench/profile_commit.py.
With --check, also checks the rollups' answer against `rates.compute_stats` over the whole log. Prints the medians
as Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway import demo_history  # noqa: E402
from gateway.alerts import AlertWorker  # noqa: E402
from gateway.analytics.drift import DriftSettings  # noqa: E402
from gateway.analytics.rates import StatsQuery, compute_stats  # noqa: E402
from gateway.app import create_app  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from gateway.store import EventRow, create_store, rollups, tables  # noqa: E402

EVENTS_PER_IMPRESSION_HOUR = 91_541 / (14 * 24 * 4 * demo_history.PER_HOUR)  # measured on the demo's simulation


async def seed(db: str, events: int, days: int, end: int) -> tuple[int, str, int, int]:
    per_hour = round(events / (days * 24 * len(demo_history.MODELS) * len(demo_history.TEMPLATES)
                               * EVENTS_PER_IMPRESSION_HOUR))
    store = create_store(Settings.load(environ={}, db=db))
    await store.open()
    try:
        project, secret = await store.create_project(name="bench", origins=["*"])
        began = time.perf_counter()
        traces, written = await demo_history.seed_history(store, project.id, end, days=days, per_hour=per_hour)
        print(f"seeded {written:,} events in {time.perf_counter() - began:.1f} s", file=sys.stderr)
    finally:
        await store.close()
    return project.id, secret, written, traces


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def measure_passes(db: str, project_id: int, end: int, runs: int) -> dict[str, float]:
    """The first pass over the whole history (once), then the pass of one completed hour (`runs` times, the state
    put back before each)."""
    settings = Settings.load(environ={}, db=db)
    store = create_store(settings)
    await store.open()
    try:
        worker = AlertWorker(store, DriftSettings(), None)
        began = time.perf_counter()
        await worker.pass_project(project_id, end - 3600, time.time())
        results = {"first_pass": (time.perf_counter() - began) * 1000}
        next_hour, before = await store.alerts.load_pass(project_id)
        assert next_hour == end - 3600 and before is not None
        samples = []
        for _ in range(runs):
            began = time.perf_counter()
            await worker.pass_project(project_id, end, time.time())
            samples.append(time.perf_counter() - began)
            assert (await store.alerts.load_pass(project_id))[0] == end
            await store.alerts.save_pass(project_id, end, next_hour, before, [], time.time())  # the hour undone
        results["pass"] = median_ms(samples)
        results["streams"] = sum(len(signals) for signals in msgspec.json.decode(before)["streams"].values())
        await worker.pass_project(project_id, end, time.time())  # so the gateway's own pass at start has nothing to do
    finally:
        await store.close()
    return results


async def measure_stats(db: str, secret: str, runs: int) -> dict[str, float]:
    app = create_app(Settings.load(environ={}, db=db))
    results: dict[str, float] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for name, params in (("stats", {"group_by": "model,template,day"}),
                                 ("stats_flagged", {"group_by": "model,template,day", "include_flagged": "true"})):
                samples = []
                for run in range(runs + 1):  # the first is a warm-up
                    began = time.perf_counter()
                    response = await client.get("/v1/stats", params=params,
                                                headers={"Authorization": f"Bearer {secret}"})
                    took = time.perf_counter() - began
                    assert response.status_code == 200, response.text
                    if run:
                        samples.append(took)
                results[name] = median_ms(samples)
                results[name + "_groups"] = len(response.json()["groups"])
    return results


def measure_catch_up(db: str, project_id: int, traces: int, backlog: int, runs: int) -> dict[str, float]:
    """Write `backlog` events (new impressions: sessions the seeded history lacks, on its traces), then time the
    catch-up that folds them, `runs` times. In command mode: no writer process folds them first by itself."""
    store = create_store(Settings.load(environ={}, db=db), writer_process=False)
    rng = random.Random(3)

    async def run() -> dict[str, float]:
        await store.open()
        locked = [0.0]  # seconds spent in the writer's jobs (`Fold`, `CatchUp`): the time its lock was held
        write = store.stats._write

        async def timed(job: rollups.Job) -> object:
            began = time.perf_counter()
            try:
                return await write(job)
            finally:
                locked[0] += time.perf_counter() - began

        store.stats._write = timed
        try:
            samples, held = [], []
            for _ in range(runs):
                rows = [EventRow(id=uuid.uuid4(), trace_id=f"demo-{rng.randrange(traces - 100)}",
                                 session_id=f"late-{rng.randrange(5000)}", type=rng.choice(("shown", "copied")),
                                 value=None, reason=None, comment=None, props=None, ts=int(time.time() * 1000),
                                 ip_hash="bench") for _ in range(backlog)]
                for i in range(0, backlog, 2000):
                    await store.write_events(project_id, rows[i:i + 2000])
                began, locked[0] = time.perf_counter(), 0.0
                folded = await store.stats.catch_up()
                samples.append(time.perf_counter() - began)
                held.append(locked[0])
                assert folded == backlog, folded
            return {"catch_up": median_ms(samples), "catch_up_locked": median_ms(held), "catch_up_events": backlog}
        finally:
            await store.close()

    return asyncio.run(run())


def check(db: str, project_id: int) -> None:
    """The rollups' answer equals the recount from the log (once: the recount takes a while)."""
    with contextlib.closing(tables.connect(db)) as conn:
        with tables.transaction(conn):
            rollups.catch_up(conn)
        query = StatsQuery(group_by=("model", "template", "day"))
        assert msgspec.json.encode(rollups.stats(conn, project_id, query)) == \
            msgspec.json.encode(compute_stats(rollups.log_rows(conn, project_id), query))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--backlog", type=int, default=45_000, help="events a measured catch-up folds")
    parser.add_argument("--catch-up-runs", type=int, default=3)
    parser.add_argument("--db", help="database path (default: a temporary file)")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--check", action="store_true",
                        help="also check the rollups' answer against a recount of the whole log (slow)")
    args = parser.parse_args()
    end = int(time.time()) // 3600 * 3600
    folder = tempfile.mkdtemp(prefix="bc-stats-bench-")
    db = args.db or os.path.join(folder, "bench.db")
    project_id, secret, written, traces = asyncio.run(seed(db, args.events, args.days, end))
    if args.check:
        check(db, project_id)
    results = asyncio.run(measure_passes(db, project_id, end, args.runs))
    results.update(asyncio.run(measure_stats(db, secret, args.runs)))
    results.update(measure_catch_up(db, project_id, traces, args.backlog, args.catch_up_runs))
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(db + suffix)
    size = f"{written:,} events over {args.days} days"
    print(f"Machine: {platform.machine()}, `nproc` = {os.cpu_count()}, Python {platform.python_version()}, "
          f"SQLite {tables.sqlite3.sqlite_version}; {size}.\n")
    print("| measurement | median of %d runs |" % args.runs)
    print("|---|---|")
    print(f"| `GET /v1/stats?group_by=model,template,day` ({results['stats_groups']} groups) | "
          f"{results['stats']:.1f} ms |")
    print(f"| the same with `include_flagged=true` | {results['stats_flagged']:.1f} ms |")
    print(f"| one detector pass over all {results['streams']} streams (one completed hour) | {results['pass']:.1f} ms |")
    print(f"| the first pass over the whole history (once) | {results['first_pass']:.0f} ms |")
    print(f"| a catch-up of {results['catch_up_events']:,.0f} events, each a new impression (median of "
          f"{args.catch_up_runs}) | {results['catch_up']:.0f} ms |")
    print(f"| of which in the writer's jobs (its lock held) | {results['catch_up_locked']:.0f} ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
