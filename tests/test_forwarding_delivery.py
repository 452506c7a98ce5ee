"""Forwarding end to end: a real gateway process (uvicorn), destinations added by the CLI and the API, the outbox
drained into stand-in Langfuse, PostHog and webhook servers (tests/standins.py) that check every field, through
failures, outages and a SIGKILL of the gateway."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gateway.client import Backchannel
from gateway.forwarding.crypto import generate_key
from gateway.forwarding.langfuse import VOTE_SCORE, score_id
from tests.events import event, feedback
from tests.servers import METRICS_AUTH, GatewayProcess, wait_for
from tests.standins import LangfuseStandin, PostHogStandin, WebhookReceiver

ORIGIN = "https://chat.example.com"
KEY = generate_key()


def cli(db: str, *args: str, key: str | None = KEY) -> dict:
    env = {"BACKCHANNEL_ENCRYPTION_KEY": key} if key else {}
    out = subprocess.run([sys.executable, "-m", "gateway", *args, "--db", db], capture_output=True, text=True,
                         timeout=60, env={**_environ(), **env})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "BACKCHANNEL_ENCRYPTION_KEY"}


class Stack:
    """A project, a gateway process and its three destinations."""

    def __init__(self, tmp_path, signals: str = "feedback,copied,regenerated") -> None:
        self.db = str(tmp_path / "bc.db")
        keys = cli(self.db, "project", "create", "--name", "fwd", "--origin", ORIGIN)
        self.public_key, self.secret_key = keys["public_key"], keys["secret_key"]
        self.langfuse, self.posthog = LangfuseStandin(), PostHogStandin()
        self.hook = WebhookReceiver("whsec_unset")
        self.ids = {
            "langfuse": cli(self.db, "destination", "add", "--project", self.public_key, "--kind", "langfuse",
                            "--url", self.langfuse.url, "--public-key", self.langfuse.public_key,
                            "--secret-key", self.langfuse.secret_key, "--signals", signals)["id"],
            "posthog": cli(self.db, "destination", "add", "--project", self.public_key, "--kind", "posthog",
                           "--url", self.posthog.url, "--api-key", self.posthog.api_key, "--signals", signals)["id"],
        }
        self.gateway = GatewayProcess(self.db, env={"BACKCHANNEL_ENCRYPTION_KEY": KEY,
                                                    "BACKCHANNEL_FORWARD_MAX_BACKOFF_MS": "300"})

    def start(self) -> Stack:
        self.gateway.start()
        # The webhook through the API: its signing secret is in this answer only.
        created = httpx.post(f"{self.gateway.url}/v1/destinations", headers=self.auth,
                             json={"kind": "webhook", "url": self.hook.url}, timeout=5)
        assert created.status_code == 201, created.text
        self.ids["webhook"] = created.json()["id"]
        self.hook.secret = created.json()["secret"]
        for server in (self.langfuse, self.posthog, self.hook):
            server.start()
        return self

    def stop(self) -> None:
        self.gateway.stop()
        for server in (self.langfuse, self.posthog, self.hook):
            server.stop()

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret_key}"}

    def metrics(self) -> str:
        response = httpx.get(self.gateway.url + "/metrics", headers=METRICS_AUTH, timeout=5)
        assert response.status_code == 200, response.text
        return response.text

    def destination(self, kind: str) -> dict:
        response = httpx.get(f"{self.gateway.url}/v1/destinations/{self.ids[kind]}", headers=self.auth, timeout=5)
        assert response.status_code == 200, response.text
        return response.json()

    def drained(self, delivered: dict[str, int]) -> bool:
        """Every destination has delivered this many records and holds nothing more: nothing else will be sent."""
        return all((d := self.destination(kind))["queued"] == 0 and d["delivered"] == count
                   for kind, count in delivered.items())

    def send(self, events: list[dict], http: httpx.Client) -> list[str]:
        response = http.post(f"{self.gateway.url}/v1/events", json={"project": self.public_key, "events": events},
                             headers={"Origin": ORIGIN})
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert all(r["status"] == "accepted" for r in results), results
        return [r["id"] for r in results]


@pytest.fixture
def stack(tmp_path):
    stack = Stack(tmp_path).start()
    yield stack
    stack.stop()


def test_every_vote_and_opted_in_signal_arrives_once_in_each_format(stack):
    with Backchannel(stack.secret_key, stack.gateway.url) as bc, httpx.Client(timeout=5) as http:
        token = bc.log_trace("t1", "s1", user_id="user-9", model="model-a", template="answer").feedback_token
        bc.log_trace("t2", "s2", model="model-b")
        up, down = feedback(1, trace_id="t1", token=token), feedback(0, trace_id="t1", token=token,
                                                                          reason="too_long", comment="Too long.")
        copied = event("copied", trace_id="t1", token=token, length=42)
        shown = event("shown", trace_id="t1", token=token)  # never forwarded
        stack.send([up, copied, shown], http)
        # Changed once the first vote is in Langfuse: the change overwrites the same score. (Read together, the older
        # vote would be sent marked superseded, and Langfuse would get only the newer one.)
        wait_for(lambda: score_id(stack.public_key, "t1", "s1", VOTE_SCORE) in stack.langfuse.scores,
                 what="the first vote in Langfuse")
        stack.send([down], http)
        server_vote = bc.feedback("t2", "s2", 1).id  # server-side ingest: no token, the secret key vouches
        edited = bc.signal("edited", "t2", "s2", edit_ratio=0.5).id  # not opted in anywhere

    forwarded = {up["id"], copied["id"], down["id"], server_vote}
    votes = {up["id"], down["id"], server_vote}
    wait_for(lambda: stack.drained({"langfuse": 4, "posthog": 4, "webhook": 3}), timeout=30, what="the outbox")

    assert set(stack.posthog.events) == forwarded and stack.posthog.duplicates == 0
    assert set(stack.hook.deliveries) == votes and stack.hook.duplicates == 0
    assert {d["type"] for d in stack.hook.deliveries.values()} == {"feedback.created"}
    assert edited not in stack.posthog.events and shown["id"] not in stack.posthog.events
    posted = stack.posthog.events[down["id"]]
    assert posted["event"] == "llm_feedback" and posted["distinct_id"] == "user-9"
    assert posted["properties"]["$ai_trace_id"] == "t1" and posted["properties"]["reason"] == "too_long"

    vote_score = score_id(stack.public_key, "t1", "s1", VOTE_SCORE)
    assert [w["id"] for w in stack.langfuse.writes].count(vote_score) == 2  # the vote, then its change
    assert stack.langfuse.scores[vote_score]["value"] == 0
    assert stack.langfuse.scores[vote_score]["comment"] == "Too long."
    assert {w["metadata"]["event_id"] for w in stack.langfuse.writes} == forwarded
    assert len(stack.langfuse.writes) == 4
    # The delivery process reports its counts to the gateway every half second.
    wait_for(lambda: "backchannel_forward_delivered_total 11.0" in stack.metrics(), what="the deliveries counted")
    for kind in ("langfuse", "posthog", "webhook"):
        shown_destination = stack.destination(kind)
        assert shown_destination["dead"] == 0 and shown_destination["in_flight"] == 0
        assert shown_destination["oldest_queued_age_s"] is None
        assert not {"credentials", "secret", "secret_key", "api_key"} & set(shown_destination)
    # Its log (the delivery process's included) has no line per request sent, and no credential.
    log = Path(stack.gateway.log.name).read_text()
    assert "HTTP Request" not in log and stack.langfuse.secret_key not in log and stack.posthog.api_key not in log


def _keep_sending(stack: Stack, http: httpx.Client, token: str, rounds: int, accepted: list[str]) -> None:
    for i in range(rounds):
        accepted += stack.send([feedback(i % 2, trace_id="t1", token=token),
                                event("copied", trace_id="t1", token=token, length=i)], http)


def test_a_destination_down_for_a_while_loses_nothing_and_duplicates_nothing(stack):
    accepted: list[str] = []
    with Backchannel(stack.secret_key, stack.gateway.url) as bc, httpx.Client(timeout=5) as http:
        token = bc.log_trace("t1", "s1").feedback_token
        _keep_sending(stack, http, token, 5, accepted)
        wait_for(lambda: len(stack.posthog.events) == 10, what="the first events")
        stack.posthog.fail(6, 503, {"Retry-After": "0"})
        _keep_sending(stack, http, token, 5, accepted)
        wait_for(lambda: stack.destination("posthog")["last_error"] is not None, what="a failure recorded")
        stack.posthog.stop()  # now connections are refused
        _keep_sending(stack, http, token, 5, accepted)
        wait_for(lambda: "Connect" in (stack.destination("posthog")["last_error"] or ""), what="a refused connection")
        assert stack.destination("posthog")["queued"] > 0
        stack.posthog.start()
        _keep_sending(stack, http, token, 5, accepted)
    wait_for(lambda: stack.drained({"posthog": 40}), timeout=60, what="the outbox to drain")
    assert set(stack.posthog.events) == set(accepted) and stack.posthog.duplicates == 0
    assert not stack.posthog._failures  # every failure asked for was served
    # One trace, in commit order: the stand-in kept each event's first arrival, and they arrived in order.
    arrived = [json.loads(s.body)["batch"] for s in stack.posthog.seen if s.status == 200]
    assert [e["uuid"] for batch in arrived for e in batch] == accepted


def test_the_gateway_sigkilled_mid_delivery_resumes_from_the_outbox(stack):
    accepted: list[str] = []
    stack.langfuse.slow(0.05)  # deliveries are under way when the gateway dies
    with Backchannel(stack.secret_key, stack.gateway.url) as bc, httpx.Client(timeout=5) as http:
        token = bc.log_trace("t1", "s1").feedback_token
        _keep_sending(stack, http, token, 20, accepted)
        wait_for(lambda: len(stack.langfuse.writes) >= 3, what="deliveries under way")
        stack.gateway.kill()
        stack.gateway.start()
        _keep_sending(stack, http, token, 5, accepted)
    wait_for(lambda: stack.drained({"posthog": 50, "webhook": 25}), timeout=60, what="the outbox to drain")
    assert set(stack.posthog.events) == set(accepted)
    assert set(stack.hook.deliveries) == set(accepted[0::2])
    wait_for(lambda: stack.destination("langfuse")["queued"] == 0, timeout=60, what="Langfuse's outbox")
    # Langfuse keeps scores by id: the vote's and the copy's, each arrived (a resend overwrote, never added).
    assert {w["metadata"]["event_id"] for w in stack.langfuse.writes} >= {accepted[-2], accepted[-1]}
    assert set(stack.langfuse.scores) == {score_id(stack.public_key, "t1", "s1", name)
                                          for name in (VOTE_SCORE, "copied")}
    assert stack.langfuse.scores[score_id(stack.public_key, "t1", "s1", VOTE_SCORE)]["value"] == 4 % 2


def test_destinations_api_refuses_bad_input_and_never_shows_credentials(stack):
    url = f"{stack.gateway.url}/v1/destinations"
    bad = [{"kind": "langfuse", "url": "ftp://x"}, {"kind": "smtp", "url": "https://x.example"},
           {"kind": "posthog", "url": "https://x.example"}, {"kind": "webhook", "url": "https://u:p@x.example/h"},
           {"kind": "webhook", "url": "https://x.example/h", "signals": ["shown"]},
           {"kind": "webhook", "url": "https://x.example/h", "secret": "whsec_mine"}]
    for body in bad:
        response = httpx.post(url, json=body, headers=stack.auth, timeout=5)
        assert response.status_code == 400, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert httpx.post(url, json=bad[0], timeout=5).status_code == 401
    assert httpx.get(url + "/dst_nope", headers=stack.auth, timeout=5).status_code == 404
    listed = httpx.get(url, headers=stack.auth, timeout=5).json()["destinations"]
    assert {d["id"] for d in listed} == set(stack.ids.values())
    text = json.dumps(listed) + stack.metrics()
    log = Path(stack.gateway.log.name).read_text()
    for secret in (stack.langfuse.secret_key, stack.posthog.api_key, stack.hook.secret):
        assert secret not in text and secret not in log
    tested = httpx.post(f"{url}/{stack.ids['webhook']}/test", headers=stack.auth, timeout=10).json()
    assert tested["status"] == "delivered" and tested["event_id"] in stack.hook.deliveries
    assert httpx.delete(f"{url}/{stack.ids['webhook']}", headers=stack.auth, timeout=5).status_code == 204
    assert httpx.get(f"{url}/{stack.ids['webhook']}", headers=stack.auth, timeout=5).status_code == 404


def test_a_refusal_parks_records_dead_with_its_body_and_retry_dead_requeues_them(stack):
    stack.posthog.api_key = "phc_rotated"  # every request is now refused 401
    with Backchannel(stack.secret_key, stack.gateway.url) as bc:
        bc.log_trace("t1", "s1")
        vote = bc.feedback("t1", "s1", 1).id
    wait_for(lambda: stack.destination("posthog")["dead"] == 1, what="the record to die")
    shown = stack.destination("posthog")
    assert shown["queued"] == 0 and shown["last_error"] == "HTTP 401"
    assert shown["recent_dead"][0]["event_id"] == vote and "Project API key invalid" in shown["recent_dead"][0]["body"]
    stack.posthog.api_key = "phc_test"
    requeued = cli(stack.db, "destination", "retry-dead", stack.ids["posthog"])
    assert requeued == {"id": stack.ids["posthog"], "requeued": 1}
    wait_for(lambda: vote in stack.posthog.events, what="the requeued record")
    assert stack.destination("posthog")["dead"] == 0


def test_cli_lists_tests_and_removes_without_printing_credentials(tmp_path):
    db = str(tmp_path / "bc.db")
    project = cli(db, "project", "create", "--name", "cli", "--origin", ORIGIN)["public_key"]
    with WebhookReceiver("whsec_unset") as hook:
        added = cli(db, "destination", "add", "--project", project, "--kind", "webhook", "--url", hook.url)
        assert added["id"].startswith("dst_") and added["secret"].startswith("whsec_")
        hook.secret = added["secret"]
        tested = cli(db, "destination", "test", added["id"])
        assert tested["status"] == "delivered" and tested["event_id"] in hook.deliveries
    listed = cli(db, "destination", "list", "--project", project)
    assert listed["id"] == added["id"] and listed["in_flight"] is None and "secret" not in listed
    assert cli(db, "destination", "remove", added["id"], "--project", project) == {"id": added["id"], "removed": True}
    out = subprocess.run([sys.executable, "-m", "gateway", "destination", "add", "--project", project, "--kind",
                          "posthog", "--url", "https://eu.i.posthog.com", "--api-key", "phc_x", "--db", db],
                         capture_output=True, text=True, timeout=60, env=_environ())
    assert out.returncode != 0 and "BACKCHANNEL_ENCRYPTION_KEY" in out.stderr and "phc_x" not in out.stderr


def test_two_gateway_processes_deliver_through_one_and_the_other_takes_over(tmp_path):
    db = str(tmp_path / "bc.db")
    project = cli(db, "project", "create", "--name", "two", "--origin", ORIGIN)
    auth = {"Authorization": f"Bearer {project['secret_key']}"}
    env = {"BACKCHANNEL_ENCRYPTION_KEY": KEY, "BACKCHANNEL_FORWARD_MAX_BACKOFF_MS": "300"}
    with PostHogStandin() as posthog:
        cli(db, "destination", "add", "--project", project["public_key"], "--kind", "posthog", "--url", posthog.url,
            "--api-key", posthog.api_key)
        first, second = GatewayProcess(db, env=env), GatewayProcess(db, env=env)
        first.start()
        second.start()
        try:
            def leaders() -> list[GatewayProcess]:
                shown = {g: httpx.get(f"{g.url}/v1/destinations", headers=auth, timeout=5).json()["destinations"][0]
                         for g in (first, second) if g.proc.poll() is None}
                return [g for g, d in shown.items() if d["in_flight"] is not None]

            with Backchannel(project["secret_key"], first.url) as bc:
                bc.log_trace("t1", "s1")
                sent = [bc.feedback("t1", "s1", i % 2).id for i in range(10)]
            wait_for(lambda: set(posthog.events) == set(sent), what="the first events")
            (leader,) = wait_for(leaders, what="one leader")
            follower = second if leader is first else first
            leader.kill()
            with Backchannel(project["secret_key"], follower.url) as bc:
                sent += [bc.feedback("t1", "s1", i % 2).id for i in range(10)]
            wait_for(lambda: set(posthog.events) == set(sent), timeout=30, what="the follower to take over")
            wait_for(lambda: leaders() == [follower], what="the follower shown as the one delivering")
        finally:
            first.stop()
            second.stop()


def test_the_gateway_refuses_to_start_with_destinations_and_no_encryption_key(tmp_path):
    db = str(tmp_path / "bc.db")
    project = cli(db, "project", "create", "--name", "nokey", "--origin", ORIGIN)["public_key"]
    cli(db, "destination", "add", "--project", project, "--kind", "webhook", "--url", "https://hooks.example.com/x")
    gateway = GatewayProcess(db)  # the test's environment has no BACKCHANNEL_ENCRYPTION_KEY
    with pytest.raises(RuntimeError, match="BACKCHANNEL_ENCRYPTION_KEY is not set"):
        gateway.start()


def _children(pid: int) -> dict[int, str]:
    """The processes whose parent is `pid`, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found[int(entry.name)] = cmdline
    return found


def _niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[16])


def test_delivery_runs_in_a_lower_priority_child_that_goes_with_the_gateway(stack):
    # Sending to destinations never takes the gateway's event loop: a child process does it, in the idle scheduling
    # class, the encryption key nowhere in its command line; when the gateway dies, so does it.
    with Backchannel(stack.secret_key, stack.gateway.url) as bc:
        bc.log_trace("t1", "s1")
        vote = bc.feedback("t1", "s1", 1).id
    wait_for(lambda: vote in stack.posthog.events, what="the vote delivered")
    gateway = stack.gateway.proc.pid
    (child,) = [pid for pid, cmd in _children(gateway).items() if "gateway.forwarding.process" in cmd]
    assert KEY not in _children(gateway)[child]
    (writer,) = [pid for pid, cmd in _children(gateway).items() if "gateway.store.writer" in cmd]
    assert os.sched_getscheduler(child) == os.SCHED_IDLE  # any wake-up of the gateway or its writer preempts it
    assert _niceness(writer) > _niceness(gateway)
    # The child's counts reach the gateway's /metrics: the vote, once per destination.
    wait_for(lambda: "backchannel_forward_delivered_total 3.0" in stack.metrics(), what="three deliveries counted")
    # A child that dies is started again, and what it had not delivered is still queued.
    os.kill(child, signal.SIGKILL)
    with Backchannel(stack.secret_key, stack.gateway.url) as bc:
        changed = bc.feedback("t1", "s1", 0).id
    wait_for(lambda: changed in stack.posthog.events, timeout=30, what="delivery after the child's restart")
    (child,) = [pid for pid, cmd in _children(gateway).items() if "gateway.forwarding.process" in cmd]
    stack.gateway.kill()

    def gone() -> bool:
        try:
            return Path(f"/proc/{child}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
        except FileNotFoundError:
            return True

    wait_for(gone, what="the delivery process to exit with the gateway")
