"""What the browser tests run against: `backchannel demo` (gateway and demo app, real uvicorn, real Redis) in a
temporary directory of its own, a static site for a second chat app, and the gateway's server API.

Tests assert on what the gateway stored (`Stack.wait_trace`), not only on the page.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import selectors
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import httpx

from tests.servers import METRICS_AUTH, METRICS_TOKEN, free_port

PAGES = Path(__file__).resolve().parent / "pages"


class Stack:
    """The running demo: URLs, keys, the log of its process, and the gateway's server API."""

    def __init__(self, info: dict[str, str], db: str, log: Path) -> None:
        self.gateway_url = info["gateway_url"]
        self.demo_url = info["demo_url"].rstrip("/")
        self.public_key = info["public_key"]
        self.secret_key = info["secret_key"]
        self.db = db
        self.log = log

    def api(self, secret_key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.gateway_url, timeout=5,
                            headers={"Authorization": f"Bearer {secret_key or self.secret_key}"})

    def trace(self, trace_id: str, secret_key: str | None = None) -> dict[str, Any] | None:
        """`GET /v1/traces/{id}`: the trace, its events, its current ratings and signal counts (None if unknown)."""
        with self.api(secret_key) as api:
            response = api.get(f"/v1/traces/{trace_id}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def wait_trace(self, trace_id: str, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = 15,
                   secret_key: str | None = None, what: str = "the stored trace to match") -> dict[str, Any]:
        """Poll the stored trace until `predicate(trace)` holds; fail with the last trace seen."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.trace(trace_id, secret_key)
            if last is not None and predicate(last):
                return last
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; last stored: {json.dumps(last, indent=1)[:3000]}")

    def create_project(self, origin: str, *, require_token: bool = True) -> dict[str, str]:
        args = [sys.executable, "-m", "gateway", "project", "create", "--name", "e2e", "--origin", origin,
                "--db", self.db]
        if not require_token:
            args.append("--no-require-token")
        return json.loads(subprocess.run(args, capture_output=True, text=True, check=True, timeout=60).stdout)

    def log_trace(self, trace_id: str, session_id: str, secret_key: str, **fields: Any) -> str:
        with self.api(secret_key) as api:
            response = api.post("/v1/traces", json={"trace_id": trace_id, "session_id": session_id, **fields})
        assert response.status_code in (200, 201), response.text
        return response.json()["feedback_token"]

    def log_size(self) -> int:
        return self.log.stat().st_size

    def logs_since(self, offset: int) -> dict[str, str]:
        """What the process logged from `offset` on, as {"gateway": ..., "demo": ...} (see `split_log`)."""
        with self.log.open("rb") as f:
            f.seek(offset)
            return split_log(f.read().decode(errors="replace"))


# `backchannel demo` logs "2026-01-01 12:00:00,123 LEVEL logger.name: message"; a traceback's lines follow its record.
_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ([\w.]+): ", re.MULTILINE)


_DEMO_LOGGERS = {"demo_app", "httpx", "httpcore"}  # the demo app, and its client calling the gateway's /v1/traces
_SHARED_LOGGERS = {"uvicorn"}  # one logger for both servers


def split_log(text: str) -> dict[str, str]:
    """One process serves both apps: the demo's records (its loggers and its HTTP client's) go to "demo", uvicorn's
    own to both, the rest to "gateway"; a record's continuation lines (a traceback) go with it."""
    out: dict[str, list[str]] = {"gateway": [], "demo": []}
    owners = ("gateway",)
    for line in text.splitlines(keepends=True):
        record = _RECORD.match(line)
        if record:
            root = record.group(1).split(".")[0]
            owners = ("demo",) if root in _DEMO_LOGGERS else ("gateway", "demo") if root in _SHARED_LOGGERS \
                else ("gateway",)
        for owner in owners:
            out[owner].append(line)
    return {owner: "".join(lines) for owner, lines in out.items()}


def start_demo(redis_url: str, db: str, log: Any) -> tuple[subprocess.Popen, dict[str, str]]:
    """`backchannel demo --json` on free ports; its one JSON line once both servers answer.

    Raises OSError when it exited first (a port taken meanwhile by another process, say). Waits on the process,
    not on the pipe's EOF: a child of the demo could hold the pipe open after the demo itself died.
    """
    port, demo_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--host", "127.0.0.1", "--port", str(port), "--demo-port",
         str(demo_port), "--db", db, "--redis", redis_url, "--json"],
        stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, "BACKCHANNEL_METRICS_TOKEN": METRICS_TOKEN},
    )
    deadline = time.monotonic() + 60
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while not selector.select(timeout=0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                break
    line = proc.stdout.readline() if proc.poll() is None else ""
    if line:
        return proc, json.loads(line)
    proc.kill()
    code = proc.wait()
    proc.stdout.close()
    raise OSError(f"backchannel demo did not start (exit code {code})")


@contextlib.contextmanager
def running_stack(redis_url: str) -> Iterator[Stack]:
    """`backchannel demo` with its database, key file and log in a temporary directory, removed when it stops
    (tests that fail keep their share of the log in test-artifacts/)."""
    with tempfile.TemporaryDirectory(prefix="bc-e2e-") as workdir:
        db, log_path = os.path.join(workdir, "demo.db"), Path(workdir, "demo.log")
        with log_path.open("w") as log:
            for attempt in range(3):
                try:
                    proc, info = start_demo(redis_url, db, log)
                    break
                except OSError as exc:
                    if attempt == 2:
                        raise RuntimeError(f"backchannel demo did not start; log: {log_path.read_text()}") from exc
            try:
                yield Stack(info, db, log_path)
            finally:
                proc.send_signal(signal.SIGINT)  # Ctrl+C stops both servers cleanly
                try:
                    code = proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    code = None
                proc.stdout.close()
            assert code is not None, "backchannel demo did not stop on Ctrl+C"
            assert code == 0, f"backchannel demo exited with {code}; log: {log_path.read_text()}"


def project_config(stack: Stack, public_key: str) -> dict[str, Any]:
    response = httpx.get(f"{stack.gateway_url}/v1/projects/{public_key}/config", timeout=5)
    response.raise_for_status()
    return response.json()


def duplicates(stack: Stack) -> int:
    """How many events the gateway has answered `duplicate` (a re-sent event) since it started."""
    metrics = httpx.get(f"{stack.gateway_url}/metrics", headers=METRICS_AUTH, timeout=5).text
    return int(float(next(line.split()[-1] for line in metrics.splitlines()  # Prometheus writes counters as floats
                          if line.startswith('backchannel_events_total{status="duplicate"}'))))


def store_text(db: str) -> str:
    """Every row of every table in the store, as text, except the traces' own input and output (the backend logged
    those on purpose): what the widget's events could have put there."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        lines = []
        for table in tables:
            columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            if table == "traces":
                columns = [c for c in columns if c not in ("input", "output")]
            for row in conn.execute(f"SELECT {', '.join(columns)} FROM {table}"):
                lines.append(f"{table}: {row!r}")
        return "\n".join(lines)
    finally:
        conn.close()


class StaticSite:
    """e2e/pages on its own origin, so the bare chat is a different app on a different origin from the demo."""

    def __init__(self) -> None:
        handler = functools.partial(_QuietHandler, directory=str(PAGES))
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "StaticSite":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()
