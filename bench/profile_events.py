"""CPU per `POST /v1/events` request, in-process: the ASGI app driven directly, no HTTP server, no load generator.

    .venv/bin/python bench/profile_events.py [--events 1] [--requests 20000] [--concurrency 32] [--profile]
        [--type shown|copied] [--destination]

`bench/run.py` measures throughput over HTTP, where a noisy machine moves every number. This script measures what one
request costs in CPU: the gateway's process (`time.process_time`) and its writer process (`/proc/<pid>/stat`), per
request, against a bare Starlette app driven the same way. Instruction counts repeat to within a percent or two
whatever else the machine does:

    mkfifo /tmp/ctl /tmp/ack
    PERF_CTL_FIFO=/tmp/ctl PERF_ACK_FIFO=/tmp/ack perf stat -e instructions:u -D -1 \
        --control fifo:/tmp/ctl,/tmp/ack .venv/bin/python bench/profile_events.py --only gateway

counts the measured requests only, in the gateway's process and its writer (add `-i` for the gateway's alone). `--profile` prints the top functions by own time (cProfile).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.paced import uuid7  # noqa: E402
from gateway.app import create_app  # noqa: E402
from gateway.server import tune_gc  # noqa: E402
from gateway.schemas import TraceIn  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from gateway import tokens  # noqa: E402
from gateway.forwarding import SIGNALS, WebhookSecret  # noqa: E402
from gateway.forwarding.crypto import generate_key  # noqa: E402
from gateway.forwarding.webhook import new_secret  # noqa: E402

ORIGIN = b"http://bench.local"
UNLIMITED = "10000000/s burst 10000000"


def perf_control(command: str) -> None:
    """Tell `perf stat --control fifo:CTL,ACK -D -1` (if it runs us) to count only the measured part."""
    # Under `valgrind --tool=callgrind --instr-atstart=no` (no perf counters; with --trace-children=yes the writer is
    # counted too: every process under callgrind is switched).
    if os.environ.get("CALLGRIND_CONTROL"):
        subprocess.run(["callgrind_control", "-i", "on" if command == "enable" else "off"],
                       check=True, capture_output=True)
    ctl, ack = os.environ.get("PERF_CTL_FIFO"), os.environ.get("PERF_ACK_FIFO")
    if ctl and ack:
        with open(ctl, "w") as fifo:
            fifo.write(command + "\n")
        with open(ack) as fifo:
            fifo.readline()


def cpu_seconds_of(pid: int) -> float:
    """User + system CPU of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Driver:
    """Sends prepared bodies to an ASGI app, `concurrency` requests at a time, and checks every answer."""

    def __init__(self, app, bodies: list[bytes], path: str, expect: int) -> None:
        self.app, self.bodies, self.path, self.expect = app, bodies, path, expect
        self.next = 0
        self.bad = 0

    async def one(self, body: bytes) -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": self.path, "raw_path": self.path.encode(), "query_string": b"",
                 "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
                 "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                             (b"origin", ORIGIN), (b"content-length", str(len(body)).encode())]}
        sent = False
        status = 0

        async def receive():
            nonlocal sent
            if sent:
                await asyncio.Event().wait()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await self.app(scope, receive, send)
        if status != self.expect:
            self.bad += 1

    async def worker(self) -> None:
        while self.next < len(self.bodies):
            body = self.bodies[self.next]
            self.next += 1
            await self.one(body)

    async def run(self, concurrency: int) -> None:
        self.next = 0
        await asyncio.gather(*(self.worker() for _ in range(concurrency)))


def event_bodies(public_key: str, traces: list[tuple[str, str]], count: int, per_request: int,
                 type: str = "shown") -> list[bytes]:
    encode = msgspec.json.encode
    extra = {"length": 120} if type == "copied" else {}
    bodies = []
    for i in range(count):
        trace, token = traces[i % len(traces)]
        events = [{"id": uuid7(), "type": type, "trace_id": trace, "token": token,
                   "ts": int(time.time() * 1000), "dwell_ms": 1200, **extra} for _ in range(per_request)]
        bodies.append(encode({"project": public_key, "events": events}))
    return bodies


async def measure(args: argparse.Namespace) -> None:
    from bench.bare_app import app as bare

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.load({}, db=f"{tmp}/bench.db", limit_session=UNLIMITED, limit_ip=UNLIMITED,
                                 limit_project=UNLIMITED, sqlite_synchronous=args.synchronous,
                                 encryption_key=generate_key() if args.destination else None)
        app = create_app(settings)
        gateway = app.state.gateway
        await gateway.start()
        try:
            project, secret = await gateway.store.create_project(name="bench", origins=[ORIGIN.decode()])
            traces = []
            for i in range(args.traces):
                trace_id, session_id = str(uuid.uuid4()), f"session-{i % 500}"
                await gateway.store.upsert_trace(project.id, TraceIn(trace_id=trace_id, session_id=session_id))
                token, _ = tokens.mint(secret, public_key=project.public_key, trace_id=trace_id,
                                       session_id=session_id, ttl=86400)
                traces.append((trace_id, token))
            if args.destination:
                # One webhook that wants every forwardable signal. Its worker is stopped: delivery runs outside the
                # request path, so what is measured is what ingest pays, the outbox rows written in each commit.
                await gateway.forwarder.stop()
                await gateway.store.outbox.add(project.id, "webhook", "http://127.0.0.1:9/sink", SIGNALS,
                                               gateway.vault.seal(WebhookSecret(new_secret())))
            tune_gc()  # as `backchannel serve` does
            warm = Driver(app, event_bodies(project.public_key, traces, 2000, args.events, args.type), "/v1/events",
                          200)
            await warm.run(args.concurrency)
            for name, target, status in (("bare", bare, 204), ("gateway", app, 200)):
                if args.only and name != args.only:
                    continue
                driver = Driver(target, event_bodies(project.public_key, traces, args.requests, args.events,
                                                     args.type), "/v1/events", status)
                writer_pid = gateway.store.writer_pid
                writer_before = cpu_seconds_of(writer_pid)
                profiler = cProfile.Profile() if args.profile else None
                started, cpu = time.perf_counter(), time.process_time()
                perf_control("enable")
                if profiler:
                    profiler.enable()
                await driver.run(args.concurrency)
                if profiler:
                    profiler.disable()
                perf_control("disable")
                wall, cpu = time.perf_counter() - started, time.process_time() - cpu
                writer_cpu = cpu_seconds_of(writer_pid) - writer_before if name == "gateway" else 0.0
                n = len(driver.bodies)
                print(f"{name:8} {n:,} requests x {args.events} events: {n / wall:,.0f} req/s in-process, "
                      f"CPU {cpu / n * 1e6:.1f} us/request here + {writer_cpu / n * 1e6:.1f} us in the writer"
                      f"{'' if not driver.bad else f', {driver.bad} BAD ANSWERS'}")
                if profiler:
                    pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.top)
        finally:
            await gateway.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1, help="events per request")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--traces", type=int, default=2000)
    parser.add_argument("--synchronous", default="FULL")
    parser.add_argument("--only", choices=("bare", "gateway"))
    parser.add_argument("--type", choices=("shown", "copied"), default="shown",
                        help="event type sent (`shown` is never forwarded, `copied` is when opted in)")
    parser.add_argument("--destination", action="store_true",
                        help="configure one destination (a webhook wanting every forwardable signal)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(measure(args))


if __name__ == "__main__":
    main()
