"""Drift alerts end to end: seeded history with a known regression, the gateway's pass, `GET /v1/alerts`, and the
alert webhook against a real local HTTP receiver that fails first (retried until delivered, across a restart)."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gateway import demo_history
from gateway.alerts import AlertWorker, hour_streams, stream_key
from gateway.analytics.drift import iso_hour
from gateway.backoff import Backoff
from gateway.forwarding import WebhookSecret
from gateway.forwarding.crypto import Vault, generate_key
from gateway.forwarding.webhook import new_secret, verify
from gateway.app import create_app
from gateway.cli import main
from gateway.settings import Settings
from tests.conftest import running_gateway

END = int(dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc).timestamp())  # the seeded history's end: fixed, so is
# the simulation (the detector's verdicts on it are then the same on every run)
REGRESSED = stream_key("model-b", "answer")


class Receiver:
    """A real HTTP server on a free port that answers 500 to its first `fail_first` requests, then 204."""

    def __init__(self, fail_first: int) -> None:
        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 500 if len(receiver.requests) < receiver.fail_first else 204
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def delivered(self) -> dict[str, list[int]]:
        """webhook-id → the statuses it was answered with, in order."""
        out: dict[str, list[int]] = {}
        for headers, _, status in self.requests:
            out.setdefault(headers["webhook-id"], []).append(status)
        return out


async def until(predicate, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def alerts_of(h, state: str = "all") -> list[dict]:
    r = await h.client.get("/v1/alerts", params={"state": state}, headers={"Authorization": f"Bearer {h.secret_key}"})
    assert r.status_code == 200, r.text
    return r.json()["alerts"]


async def test_a_regression_opens_alerts_that_reach_the_webhook_once(tmp_path, capsys):
    key, secret = generate_key(), new_secret()
    db = str(tmp_path / "bc.db")
    with Receiver(fail_first=1) as receiver:
        async with running_gateway(db, encryption_key=key) as h:
            await h.gateway.alerts.stop()  # this test runs the passes and deliveries itself
            store = h.gateway.store
            project = await store.project_by_public_key(h.public_key)
            await demo_history.seed_history(store, project.id, END)
            await store.alerts.set_webhook(project.id, receiver.url, Vault(key).seal(WebhookSecret(secret=secret)))
            worker = AlertWorker(store, h.gateway.drift_settings, h.gateway.vault,
                                 backoff=Backoff(base=0.05, cap=0.05, give_up=math.inf))
            changes = await worker.run_pass(END + 60)
            opened = {(c.key, c.signal) for c in changes if c.state == "open"}
            assert (REGRESSED, "regenerated") in opened and ("{}", "regenerated") in opened
            regression = END - demo_history.REGRESSION_AT
            assert all(c.detected_at >= regression for c in changes)  # nothing before the change
            assert not any(json.loads(key).get("model") == "model-a" for key, _ in opened)
            assert await worker.run_pass(END + 60) == []  # each hour is judged once

            # `backchannel drift backtest` on the same hours, as CSV, opens exactly these alerts.
            rows = await store.stats.hour_counts(project.id, END - demo_history.DAYS * 86400, END)
            with open(tmp_path / "hours.csv", "w", newline="") as file:
                csv.writer(file).writerows([("hour", "key", "signal", "shown", "count"),
                                            *((c.hour, c.key, c.signal, c.shown, c.count) for c in hour_streams(rows))])
            assert main(["drift", "backtest", "--input", str(tmp_path / "hours.csv")]) == 0
            replayed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
            assert sorted((a["key"], a["signal"], a["detected_at"]) for a in replayed) == sorted(
                (c.key, c.signal, iso_hour(c.detected_at)) for c in changes if c.state == "open")

            resolved = [c for c in changes if c.state == "resolved"]
            listed = await alerts_of(h, "open")
            assert len(listed) == len(opened) - len(resolved)
            assert len(await alerts_of(h, "resolved")) == len(resolved) and len(await alerts_of(h)) == len(opened)
            alert = next(a for a in listed if a["key"] == {"model": "model-b", "template": "answer"}
                         and a["signal"] == "regenerated")
            assert set(alert) == {"id", "key", "signal", "direction", "baseline", "recent", "detected_at", "state",
                                  "method"}
            assert alert["direction"] == "worse" and alert["state"] == "open" and alert["method"] == "binomial-cusum"
            assert alert["recent"]["rate"] > alert["baseline"]["rate"]
            assert set(alert["baseline"]) == {"shown", "count", "rate"}
            assert alert["detected_at"].endswith(":00:00Z")

            # The first POST fails (500): it is tried again until delivered, and no alert is sent twice once 2xx.
            await worker.deliver_due()
            await until(lambda: _all_delivered(worker, receiver, len(opened)), "every alert delivered")
            statuses = receiver.delivered()
            assert sorted(statuses) == sorted(a["id"] for a in await alerts_of(h))
            assert sorted(statuses.values()) == [[204]] * (len(opened) - 1) + [[500, 204]]
            assert await worker.deliver_due() == 0 and len(receiver.requests) == len(opened) + 1
            for headers, body, _ in receiver.requests:
                assert verify(secret, headers, body, time.time())
                payload = json.loads(body)
                assert payload["type"] == "alert.opened" and payload["data"]["id"] == headers["webhook-id"]


async def _all_delivered(worker: AlertWorker, receiver: Receiver, count: int) -> bool:
    await worker.deliver_due()
    return sum(1 for statuses in receiver.delivered().values() if statuses[-1] == 204) == count


async def test_the_gateway_runs_a_pass_at_start_and_resumes_deliveries_after_a_restart(tmp_path):
    key, secret = generate_key(), new_secret()
    db = str(tmp_path / "bc.db")
    with Receiver(fail_first=10**6) as receiver:
        async with running_gateway(db, encryption_key=key) as h:
            await h.gateway.alerts.stop()
            store = h.gateway.store
            project = await store.project_by_public_key(h.public_key)
            await demo_history.seed_history(store, project.id, END)
            await store.alerts.set_webhook(project.id, receiver.url, Vault(key).seal(WebhookSecret(secret=secret)))
            h.gateway.alerts.start()  # as at the gateway's start: its first pass finds the history
            await until(lambda: _any(alerts_of(h, "open")), "the pass at start to open alerts")
            await until(lambda: _true(bool(receiver.requests)), "a first (failing) delivery")
            opened = {a["id"] for a in await alerts_of(h, "all")}  # one delivery each, resolved or not
        receiver.fail_first = len(receiver.requests)  # from now on the receiver answers 204

        app = create_app(Settings.load(environ={}, db=db, encryption_key=key))
        async with app.router.lifespan_context(app):  # restarted: the deliveries left in the store go out
            await until(lambda: _true(_succeeded(receiver) == opened), "the resumed deliveries")
        assert all(statuses.count(204) == 1 for statuses in receiver.delivered().values())


def _succeeded(receiver: Receiver) -> set[str]:
    return {webhook_id for webhook_id, statuses in receiver.delivered().items() if 204 in statuses}


async def _any(answer) -> bool:
    return bool(await answer)


async def _true(value: bool) -> bool:
    return value


def test_set_alert_webhook_prints_the_secret_once_and_keeps_it_sealed(tmp_path, capsys):
    db, key = str(tmp_path / "bc.db"), generate_key()
    assert main(["project", "create", "--name", "p", "--origin", "*", "--db", db]) == 0
    public_key = json.loads(capsys.readouterr().out)["public_key"]
    hook = ["project", "set-alert-webhook", "--project", public_key, "--db", db]
    assert main([*hook, "--url", "https://alerts.example.com/in", "--encryption-key", key]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["url"] == "https://alerts.example.com/in" and printed["signing_secret"].startswith("whsec_")
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("bc.db"))
    assert printed["signing_secret"].encode() not in stored and b"alerts.example.com" in stored
    for bad, message in ((["--url", "ftp://x", "--encryption-key", key], "http"),
                         (["--url", "https://alerts.example.com/in"], "BACKCHANNEL_ENCRYPTION_KEY")):
        with pytest.raises(SystemExit, match=message):
            main([*hook, *bad])
    assert main(["project", "remove-alert-webhook", "--project", public_key, "--db", db]) == 0
    with pytest.raises(SystemExit, match="no alert webhook"):
        main(["project", "remove-alert-webhook", "--project", public_key, "--db", db])
