"""Real servers for tests: redis-server and a uvicorn-run gateway, each on a free loopback port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


# The metrics token every test gateway is started with: /metrics is off without one.
METRICS_TOKEN = "metrics-token-of-the-tests"
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class RedisServer:
    """A throwaway redis-server on a free port; `stop()` kills it, `start()` brings it back on the same port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; the test command installs it (apt-get install redis-server)")
        self.binary = binary
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bc-redis-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: _port_open(self.port), what="redis-server to listen")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


class GatewayProcess:
    """`backchannel serve` in a real uvicorn process, for tests where process behaviour matters."""

    def __init__(self, db: Path, *, redis_url: str | None = None, env: dict[str, str] | None = None) -> None:
        self.db = db
        self.port = free_port()
        self.redis_url = redis_url
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        # Beside the database (a test's tmp_path), so nothing is left in the temporary directory after the run.
        self.log = tempfile.NamedTemporaryFile(prefix="gateway-", suffix=".log", dir=Path(db).parent, delete=False)
        self.log.close()  # the file stays (delete=False); each start appends to it through a handle of its own

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--db", str(self.db)]
        if self.redis_url:
            cmd += ["--redis", self.redis_url]
        env = {**os.environ, "BACKCHANNEL_METRICS_TOKEN": METRICS_TOKEN, **self.env}
        with open(self.log.name, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_for(self._ready, timeout=30, what="gateway /healthz")

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {self.proc.returncode}: {Path(self.log.name).read_text()}")
        try:
            return httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


# Debian's Chromium where installed (Playwright cannot download its own browser here), else Playwright's own.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def chromium_executable() -> str | None:
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None
