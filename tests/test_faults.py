"""Process-level faults: a real uvicorn gateway killed mid-stream, a real Redis killed mid-stream."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.events import event
from tests.servers import METRICS_AUTH, GatewayProcess, wait_for

ORIGIN = "https://chat.example.com"


def create_project(db: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "gateway", "project", "create", "--name", "faults", "--origin", ORIGIN,
                          "--db", db], capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


def log_trace(url: str, secret: str, trace_id: str, session_id: str = "s1") -> str:
    response = httpx.post(f"{url}/v1/traces", json={"trace_id": trace_id, "session_id": session_id},
                          headers={"Authorization": f"Bearer {secret}"}, timeout=5)
    assert response.status_code in (200, 201), response.text
    return response.json()["feedback_token"]


def send(url: str, project: str, events: list[dict], client: httpx.Client) -> httpx.Response:
    return client.post(f"{url}/v1/events", json={"project": project, "events": events}, headers={"Origin": ORIGIN})


def stored_ids(db: str) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM events")]


def test_sigkill_mid_stream_loses_no_acknowledged_event(tmp_path):
    db = str(tmp_path / "bc.db")
    keys = create_project(db)
    gateway = GatewayProcess(db)
    gateway.start()
    try:
        tokens = [log_trace(gateway.url, keys["secret_key"], f"t{i}", f"s{i}") for i in range(8)]
        acknowledged: list[str] = []
        unanswered: list[dict] = []
        stop = threading.Event()

        def client(worker: int) -> None:
            with httpx.Client(timeout=5) as http:
                n = 0
                while not stop.is_set():
                    batch = [event(trace_id=f"t{worker}", token=tokens[worker]) for _ in range(5)]
                    n += 1
                    try:
                        response = send(gateway.url, keys["public_key"], batch, http)
                    except httpx.HTTPError:
                        unanswered.extend(batch)  # in flight when the process died: unknown fate
                        return
                    assert response.status_code == 200, response.text
                    for result in response.json()["results"]:
                        assert result["status"] == "accepted"
                        acknowledged.append(result["id"])

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        wait_for(lambda: len(acknowledged) >= 400, timeout=60, what="400 acknowledged events")
        gateway.kill()
        stop.set()
        for t in threads:
            t.join(10)
        assert len(acknowledged) >= 400

        gateway.start()  # same db, fresh process
        stored = stored_ids(db)
        assert set(acknowledged) <= set(stored), "an acknowledged event was lost"
        assert len(stored) == len(set(stored))
        # The client retries what it never heard back about: each is stored once, whatever its fate was.
        with httpx.Client(timeout=5) as http:
            for e in unanswered:
                response = send(gateway.url, keys["public_key"], [e], http)
                assert response.json()["results"][0]["status"] in ("accepted", "duplicate")
        stored = stored_ids(db)
        assert len(stored) == len(set(stored)) == len(set(acknowledged) | {e["id"] for e in unanswered})
    finally:
        gateway.stop()


@pytest.mark.redis
def test_redis_killed_while_events_flow_keeps_accepting(tmp_path, redis_server, redis_url):
    db = str(tmp_path / "bc.db")
    keys = create_project(db)
    gateway = GatewayProcess(db, redis_url=redis_url)
    gateway.start()
    try:
        token = log_trace(gateway.url, keys["secret_key"], "t1")
        with httpx.Client(timeout=5) as http:
            statuses = []
            for i in range(60):
                if i == 20:
                    redis_server.stop()
                if i == 45:
                    redis_server.start()
                response = send(gateway.url, keys["public_key"], [event(trace_id="t1", token=token)], http)
                statuses.append(response.status_code)
                assert response.json()["results"][0]["status"] == "accepted"
            assert statuses == [200] * 60
            metrics = http.get(gateway.url + "/metrics", headers=METRICS_AUTH).text
            fail_open = next(line for line in metrics.splitlines() if line.startswith("backchannel_limiter_fail_open"))
            assert float(fail_open.split()[-1]) >= 1
            assert http.get(gateway.url + "/readyz").json()["checks"]["redis"] is True
        assert len(stored_ids(db)) == 60
    finally:
        redis_server.start() if redis_server.proc is None else None
        gateway.stop()


@pytest.mark.redis
def test_readiness_reports_redis_down_as_degraded(tmp_path, redis_server, redis_url):
    db = str(tmp_path / "bc.db")
    create_project(db)
    gateway = GatewayProcess(db, redis_url=redis_url)
    gateway.start()
    try:
        assert httpx.get(gateway.url + "/readyz").json() == {"status": "ready", "checks": {"store": True, "redis": True}}
        redis_server.stop()
        ready = httpx.get(gateway.url + "/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    finally:
        if redis_server.proc is None:
            redis_server.start()
        gateway.stop()


@pytest.mark.redis
def test_two_gateway_processes_share_rate_limits_through_redis(tmp_path, redis_url):
    db = str(tmp_path / "bc.db")
    keys = create_project(db)
    env = {"BACKCHANNEL_LIMIT_SESSION": "1/min burst 100"}
    first, second = GatewayProcess(db, redis_url=redis_url, env=env), GatewayProcess(db, redis_url=redis_url, env=env)
    first.start()
    second.start()
    try:
        token = log_trace(first.url, keys["secret_key"], "t1")
        with httpx.Client(timeout=5) as http:
            batch = [event(trace_id="t1", token=token) for _ in range(100)]
            assert send(first.url, keys["public_key"], batch, http).status_code == 200
            refused = send(second.url, keys["public_key"], [event(trace_id="t1", token=token)], http)
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert len(stored_ids(db)) == 100
    finally:
        first.stop()
        second.stop()


def children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def test_stop_signal_to_the_process_group_stops_cleanly_without_losing_events(tmp_path):
    """`timeout`, Ctrl+C and service managers signal the whole group: the writer must outlive the gateway's drain."""
    import os
    import signal

    db = str(tmp_path / "bc.db")
    keys = create_project(db)
    gateway = GatewayProcess(db)
    gateway.start()
    token = log_trace(gateway.url, keys["secret_key"], "t1")
    (writer,) = children(gateway.proc.pid)
    with httpx.Client(timeout=5) as http:
        sent = [event(trace_id="t1", token=token) for _ in range(20)]
        assert all(r["status"] == "accepted" for r in send(gateway.url, keys["public_key"], sent, http).json()["results"])
    for pid in (gateway.proc.pid, writer):  # what a signal to the process group does (the group here is pytest's)
        os.kill(pid, signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal so a process manager sees why it stopped.
    assert gateway.proc.wait(20) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in Path(gateway.log.name).read_text()
    wait_for(lambda: not os.path.exists(f"/proc/{writer}") or "zombie" in open(f"/proc/{writer}/status").read().lower(),
             timeout=10, what="the writer process to exit")
    assert set(stored_ids(db)) == {e["id"] for e in sent}
