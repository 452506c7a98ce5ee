"""A paced (open-loop) load generator: POST /v1/events at a fixed rate, latency measured from the scheduled send time.

wrk keeps a fixed number of requests in flight, so when the server stalls it simply sends less and the stall hides
(coordinated omission). Here request i is due at start + i/rate whatever happened before; a request that waits for a
free connection has that wait in its latency, as a real client would. Run by `bench/run.py`; prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


def uuid7() -> str:
    """A time-ordered UUIDv7, as the widget makes them."""
    value = (time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | uuid.uuid4().int & ((1 << 76) - 1)
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p / 100))]


def read_tokens(path: str) -> tuple[str, list[tuple[str, str]]]:
    with open(path) as file:
        public_key = file.readline().strip()
        traces = [(trace, token) for trace, _, token in (line.split() for line in file if line.strip())]
    return public_key, traces


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.public_key, self.traces = read_tokens(args.tokens)
        self.total = int(args.rate * (args.warmup + args.duration))
        # Every request is built before the clock starts, so sending one costs this process (which shares the cores
        # with the server it measures) next to nothing.
        self.requests = [self.request(i) for i in range(self.total)]
        self.queue: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
        self.latencies: list[float] = []  # seconds, measured requests only
        self.ok = self.bad = self.accepted = self.errors = 0
        self.start = self.measure_from = 0.0
        self.released = 0

    def request(self, i: int) -> bytes:
        trace, token = self.traces[i % len(self.traces)]
        body = json.dumps({"project": self.public_key, "events": [
            {"id": uuid7(), "type": "shown", "trace_id": trace, "token": token,
             "ts": int(time.time() * 1000), "dwell_ms": 1200}
        ]}, separators=(",", ":")).encode()
        head = (f"POST /v1/events?project={self.public_key} HTTP/1.1\r\nHost: {self.args.host}:{self.args.port}\r\n"
                f"Content-Type: application/json\r\nOrigin: http://bench.local\r\nContent-Length: {len(body)}\r\n\r\n")
        return head.encode() + body

    async def worker(self) -> None:
        reader, writer = await asyncio.open_connection(self.args.host, self.args.port)
        try:
            while True:
                i, due = await self.queue.get()
                try:
                    writer.write(self.requests[i])
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = int(head.split(b" ", 2)[1])
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    body = await reader.readexactly(length) if length else b""
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    self.errors += 1
                    reader, writer = await asyncio.open_connection(self.args.host, self.args.port)
                    continue
                finally:
                    self.queue.task_done()
                latency = time.perf_counter() - due
                if due >= self.measure_from:
                    self.latencies.append(latency)
                accepted = body.count(b'"status":"accepted"') if status == 200 else 0
                self.accepted += accepted
                if accepted == 1:
                    self.ok += 1
                else:
                    self.bad += 1
        finally:
            writer.close()

    def clock(self, tick_fd: int) -> None:
        """The schedule, in a child process: one byte down the pipe as each request falls due.

        It sleeps with the OS's microsecond timers (the event loop's own timers are about 1 ms coarse, and polling
        would cost a whole core, taken from the server measured). A process rather than a thread: handing each
        request from a thread to the loop meant a contended GIL, and the futex calls cost more than the request.
        """
        for i in range(self.total):
            delay = self.start + i / self.args.rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            os.write(tick_fd, b"\0")

    def release(self, tick_fd: int, ended: asyncio.Future) -> None:
        """Hand each request that fell due to a connection: it is due at start + i/rate, whenever it is sent."""
        ticks = os.read(tick_fd, 65536)
        if not ticks and not ended.done():  # the clock is done and gone
            ended.set_result(None)
        for _ in ticks:
            i = self.released
            self.released += 1
            self.queue.put_nowait((i, self.start + i / self.args.rate))

    async def main(self) -> dict:
        args = self.args
        workers = [asyncio.create_task(self.worker()) for _ in range(args.connections)]
        await asyncio.sleep(0.2)  # let the connections open before the clock starts
        loop = asyncio.get_running_loop()
        tick_read, tick_write = os.pipe()
        self.start = time.perf_counter() + 0.05  # perf_counter is CLOCK_MONOTONIC: the child shares it
        self.measure_from = self.start + args.warmup
        child = os.fork()
        if child == 0:  # touches nothing of the parent's loop, and leaves without running its exit handlers
            try:
                os.close(tick_read)
                self.clock(tick_write)
            finally:
                os._exit(0)
        os.close(tick_write)
        ended = loop.create_future()
        loop.add_reader(tick_read, self.release, tick_read, ended)
        await ended
        loop.remove_reader(tick_read)
        os.close(tick_read)
        os.waitpid(child, 0)
        try:
            await asyncio.wait_for(self.queue.join(), timeout=10)
        except asyncio.TimeoutError:
            pass
        elapsed = time.perf_counter() - self.measure_from
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        lat = sorted(self.latencies)
        return {
            "rate": args.rate, "scheduled": self.total, "measured": len(lat), "ok_requests": self.ok,
            "bad_requests": self.bad, "accepted": self.accepted, "errors": self.errors,
            "achieved_rps": len(lat) / elapsed if elapsed > 0 else 0.0,
            **{f"p{p}_us".replace(".", "_"): percentile(lat, p) * 1e6 for p in (50, 90, 99, 99.9)},
            "max_us": (lat[-1] * 1e6) if lat else float("nan"),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", required=True, help="tokens file written by bench/run.py")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds sent at the same rate but not measured")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    result = (uvloop.run if uvloop is not None else asyncio.run)(Run(args).main())
    print("BENCH " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
