"""What the outbox costs a group commit: the writer's transaction for a batch of events, with no destination and with
one, timed in-process on a temporary database (the same functions the writer runs, no process, no HTTP).

    .venv/bin/python bench/outbox_cost.py [--events 1,20,200] [--repeat 400] [--only off|none|one]

Instructions rather than time, one configuration at a time (this machine's `perf` has no hardware counters):

    CALLGRIND_CONTROL=1 valgrind --tool=callgrind --instr-atstart=no .venv/bin/python bench/outbox_cost.py \
        --only none --events 20 --kind copied --repeat 200     # then: grep totals callgrind.out.<pid>

Each commit inserts `events` new events spread over 200 traces in one transaction (as the writer's group commit does)
and is timed with `time.perf_counter`; the report is the lowest and the median time per commit over `repeat` commits,
per configuration, the configurations interleaved so a busy machine slows them alike. `off`: no outbox at all (its
statement left out of the commit); `none`: no destination; `one`: one webhook destination wanting every forwardable signal (`copied` events get an outbox row each; `shown` events
are never forwarded, so for them only the join's look-up is paid).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.forwarding import SIGNALS  # noqa: E402
from gateway.schemas import TraceIn  # noqa: E402
from gateway.store import EventRow  # noqa: E402
from gateway.store import outbox, tables  # noqa: E402

TRACES = 200


def setup(path: str, destination: bool) -> tuple[object, int, list[str], dict]:
    conn = tables.connect(path, synchronous="NORMAL")  # no fsync per commit: the SQL's own cost, not the disk's
    with tables.transaction(conn):
        project, _ = tables.create_project(conn, name="bench", origins=["*"])
        trace_ids = [str(uuid.uuid4()) for _ in range(TRACES)]
        for i, trace_id in enumerate(trace_ids):
            tables.upsert_trace(conn, project.id, TraceIn(trace_id=trace_id, session_id=f"s{i}"))
        if destination:
            outbox.add_destination(conn, project.id, "webhook", "http://127.0.0.1:9/x", SIGNALS, b"sealed")
    return conn, project.id, trace_ids, {}  # the last: the trace cache the writer keeps across commits


def rows(kind: str, trace_ids: list[str], count: int, start: int) -> list[EventRow]:
    props = '{"length":120}' if kind == "copied" else None
    return [EventRow(str(uuid.uuid4()), trace_ids[(start + i) % TRACES], f"s{(start + i) % TRACES}", kind, None, None,
                     None, props, int(time.time() * 1000), "iphash") for i in range(count)]


def callgrind(switch: str) -> None:
    """Count instructions from here (`on`) or no more (`off`), when run under callgrind with CALLGRIND_CONTROL set."""
    if os.environ.get("CALLGRIND_CONTROL"):
        subprocess.run(["callgrind_control", "-i", switch, str(os.getpid())], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", default="1,20,200")
    parser.add_argument("--repeat", type=int, default=400)
    parser.add_argument("--only", choices=("off", "none", "one"))
    parser.add_argument("--kind", choices=("copied", "shown"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        setups = {name: setup(os.path.join(tmp, f"{name}.db"), name == "one") for name in ("off", "none", "one")
                  if args.only in (None, name)}
        every_hook = tables._after_events()
        without_outbox = tuple(hook for hook in every_hook if hook is not outbox.after_events)
        for count in (int(n) for n in args.events.split(",")):
            for kind in [args.kind] if args.kind else ["copied", "shown"]:
                times: dict[str, list[float]] = {name: [] for name in setups}
                callgrind("on")
                for i in range(args.repeat):
                    for name, (conn, project_id, trace_ids, known) in setups.items():
                        batch = rows(kind, trace_ids, count, i * count)
                        hooks = without_outbox if name == "off" else every_hook
                        tables._after_events = lambda hooks=hooks: hooks  # type: ignore[assignment]
                        started = time.perf_counter()
                        with tables.transaction(conn):
                            tables.insert_event_batches(conn, [(project_id, batch)], known)
                        times[name].append(time.perf_counter() - started)
                callgrind("off")
                line = [f"{count:>4} x {kind:6}"]
                for name, series in times.items():
                    line.append(f"{name}: min {min(series) * 1e6:7.1f} us, median {statistics.median(series) * 1e6:7.1f}")
                print("  ".join(line))


if __name__ == "__main__":
    main()
