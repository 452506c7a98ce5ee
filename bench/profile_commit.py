"""Instructions the writer spends per group commit, and what keeping the rollups adds to it.

    .venv/bin/python bench/profile_commit.py                   # every configuration under callgrind: a Markdown table
    .venv/bin/python bench/profile_commit.py --one in-commit --events 20    # one configuration, timed, no valgrind

The writer's own code path, in-process: a `_Committer` (gateway/store/writer.py) commits one request of `--events`
events per transaction, as `serve` does for each batch it reads (no pipe, no msgpack framing), on a copy of a database
holding 20,000 traces, 500 sessions and 20,000 events already folded in (`synchronous=NORMAL`: callgrind counts
user-space instructions only, so an fsync would not show anyway), after 50 commits that are not counted. The events are
`shown`, `copied`, `feedback` and `regenerated` on random (trace, session) pairs (`--workload random`: nearly every
event a new impression), or as bench/run.py sends them (`--workload run`, the default: 2,000 traces, each with its own
session, the seven event types in turn, votes of both values; a 20-event request is one trace's). No other feature
writes in a commit, so the numbers are the rollups' alone:

- `none`: the commit as it was before rollups (no hook at all).
- `in-commit`: a fold (`rollups.plan` + `apply`) of each commit's new events inside the commit, where the first
  design kept the rollups (docs/benchmarks.md also has that design's own fold, measured at bef8d6b).
- `watermark`: the commit stores the events; every `--fold-every` commits `rollups.catch_up` folds them in, in a
  transaction of its own (the writer now has its folds planned by a process beside it and only writes them between
  two: see gateway/store/folder.py; this counts a whole fold, planning included). Commits and catch-ups are counted in
  separate runs, so each has its own number: per commit, and per event folded.

Under callgrind (`--instr-atstart=no`), collection is switched on around the measured part only (`callgrind_control
-i on|off`, the same as bench/profile_events.py) and the total read from the output file.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.schemas import TraceIn  # noqa: E402
from gateway.store import EventRow, rollups, tables  # noqa: E402
from gateway.store.writer import InsertEvents, Request, _Committer  # noqa: E402

TRACES, SESSIONS, PREFILL = 20_000, 500, 20_000
KINDS = ("shown", "copied", "feedback", "regenerated")
RUN_KINDS = ("shown", "copied", "feedback", "edited", "regenerated", "rephrased", "abandoned")  # bench/events.lua's
RUN_TRACES = 2000


def callgrind(switch: str) -> None:
    if os.environ.get("CALLGRIND_CONTROL"):
        subprocess.run(["callgrind_control", "-i", switch, str(os.getpid())], check=True, capture_output=True)


def events(rng: random.Random, count: int, workload: str = "random") -> list[EventRow[str]]:
    rows = []
    trace = rng.randrange(RUN_TRACES)
    for n in range(count):
        if workload == "random":
            kind, trace_id, session_id = rng.choice(KINDS), f"t{rng.randrange(TRACES)}", f"s{rng.randrange(SESSIONS)}"
        else:
            kind, trace_id, session_id = RUN_KINDS[n % len(RUN_KINDS)], f"t{trace}", f"run{trace % SESSIONS}"
            if count == 1:
                kind = rng.choice(RUN_KINDS)
        rows.append(EventRow(id=str(uuid.UUID(int=rng.getrandbits(128), version=4)), trace_id=trace_id,
                             session_id=session_id, type=kind, value=rng.randint(0, 1) if kind == "feedback" else None,
                             reason=None, comment=None, props=None, ts=rng.randrange(1 << 40), ip_hash="h"))
        if count == 1:
            trace = rng.randrange(RUN_TRACES)
    return rows


def setup(path: str) -> None:
    """The database every configuration starts from (a copy each)."""
    with contextlib.closing(tables.connect(path, synchronous="NORMAL")) as conn:
        with tables.transaction(conn):
            project, _ = tables.create_project(conn, name="bench", origins=["*"])
            for i in range(TRACES):
                tables.upsert_trace(conn, project.id, TraceIn(trace_id=f"t{i}", session_id="s", model=f"m{i % 2}",
                                                              template=f"x{i % 3}", ts=1_790_000_000_000 + i * 60_000))
        committer = _Committer(conn, max_batch=100_000)
        rng = random.Random(1)
        for i in range(PREFILL // 1000):
            committer.run([Request(i, InsertEvents(project.id, events(rng, 1000)))])
        _catch_up(conn)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _catch_up(conn) -> None:
    with tables.transaction(conn):
        rollups.catch_up(conn)


_insert_event_batches = tables.insert_event_batches


def _folding_in_commit(conn, batches, known_traces):
    """The first design: each commit folds its own new events in, inside it (the watermark only follows)."""
    first_seq = rollups.last_seq(conn)
    outcomes = _insert_event_batches(conn, batches, known_traces)
    fold = rollups.plan(conn, first_seq, rollups.last_seq(conn))
    fold.first = rollups.watermark(conn)
    rollups.apply(conn, fold)
    return outcomes


def measure(start: str, mode: str, per_commit: int, commits: int, fold_every: int, count: str, workload: str
            ) -> dict[str, float]:
    """Run `commits` commits of `per_commit` events in `mode`; count (`callgrind`) and time either the commits or the
    catch-ups (`count`). Returns seconds and events, per commit and per catch-up."""
    tables.insert_event_batches = _folding_in_commit if mode == "in-commit" else _insert_event_batches
    rng = random.Random(2)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "commit.db")
        shutil.copy(start, path)
        committer = _Committer(tables.connect(path, synchronous="NORMAL"), max_batch=100_000, synchronous="NORMAL")
        project_id = 1
        for i in range(50):  # warm: the statement cache, the known traces
            committer.run([Request(i, InsertEvents(project_id, events(rng, per_commit, workload)))])
        _catch_up(committer.conn)
        requests = [Request(i, InsertEvents(project_id, events(rng, per_commit, workload))) for i in range(commits)]
        commit_seconds = fold_seconds = 0.0
        folds = 0
        # Switched on and off as seldom as possible: each switch runs `callgrind_control`, which takes a while.
        callgrind("on" if count == "commits" else "off")
        for i, request in enumerate(requests):
            began = time.perf_counter()
            replies = committer.run([request])
            commit_seconds += time.perf_counter() - began
            assert replies[0].ok, replies[0].error
            if mode == "watermark" and (i + 1) % fold_every == 0:
                callgrind("off" if count == "commits" else "on")
                began = time.perf_counter()
                _catch_up(committer.conn)
                fold_seconds += time.perf_counter() - began
                callgrind("on" if count == "commits" else "off")
                folds += 1
        callgrind("off")
        if mode == "watermark":
            assert rollups.watermark(committer.conn) == rollups.last_seq(committer.conn)
        committer.conn.close()
    return {"commit_us": commit_seconds / commits * 1e6, "folds": folds,
            "fold_us_per_event": fold_seconds / max(1, folds * fold_every * per_commit) * 1e6}


def under_callgrind(start: str, mode: str, per_commit: int, commits: int, fold_every: int, count: str,
                    workload: str) -> int:
    """Instructions counted in one run of this script under callgrind."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "callgrind.out")
        subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                        sys.executable, __file__, "--start", start, "--one", mode, "--events", str(per_commit),
                        "--commits",
                        str(commits), "--fold-every", str(fold_every), "--count", count, "--workload", workload],
                       check=True, capture_output=True, env={**os.environ, "CALLGRIND_CONTROL": "1"})
        text = Path(out).read_text()
    return int(re.search(r"^totals: (\d+)", text, re.M).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--one", choices=("none", "in-commit", "watermark"), help="one configuration, no valgrind")
    parser.add_argument("--events", type=int, default=1, help="events per commit (with --one)")
    parser.add_argument("--commits", type=int, default=0, help="commits (default: 1,000 of 1 event, 200 of 20)")
    parser.add_argument("--fold-every", type=int, default=0,
                        help="commits per catch-up (default: 1,000 of 1 event, 500 of 20: about a second's load)")
    parser.add_argument("--count", choices=("commits", "catch-ups"), default="commits")
    parser.add_argument("--workload", choices=("run", "random"), default="run")
    parser.add_argument("--start", help="the database to start from (default: made first)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        start = args.start
        if start is None:
            start = os.path.join(folder, "start.db")
            setup(start)
        report(args, start)


def report(args: argparse.Namespace, start: str) -> None:

    def defaults(per_commit: int) -> tuple[int, int]:
        fold_every = args.fold_every or (1000 if per_commit == 1 else 500)
        return args.commits or max(fold_every, 1000 if per_commit == 1 else 200), fold_every

    if args.one:
        commits, fold_every = defaults(args.events)
        result = measure(start, args.one, args.events, commits, fold_every, args.count, args.workload)
        print(f"{args.one}, {commits} commits of {args.events}: {result['commit_us']:.0f} us per commit"
              + (f", {result['fold_us_per_event']:.1f} us per event folded" if args.one == "watermark" else ""))
        return
    print(f"`--workload {args.workload}`\n")
    print("| instructions | 1-event commit | 20-event commit |")
    print("|---|---:|---:|")
    rows: dict[str, list[str]] = {}
    for per_commit in (1, 20):
        commits, fold_every = defaults(per_commit)
        for mode in ("none", "in-commit", "watermark"):
            total = under_callgrind(start, mode, per_commit, commits, fold_every, "commits", args.workload)
            rows.setdefault(f"per commit, `{mode}`", []).append(f"{total / commits / 1000:,.1f} k")
        folded = commits // fold_every * fold_every * per_commit
        total = under_callgrind(start, "watermark", per_commit, commits, fold_every, "catch-ups", args.workload)
        rows.setdefault("`watermark`: per event folded by a catch-up", []).append(
            f"{total / folded / 1000:,.1f} k ({folded:,} events in {commits // fold_every})")
    for name, cells in rows.items():
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
