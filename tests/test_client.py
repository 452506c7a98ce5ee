"""gateway/client.py: trace logging against the real gateway (in-process, and a real uvicorn process); event calls
against a recording stand-in of the server-side ingest route."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from gateway import tokens
from gateway.backoff import Backoff
from gateway.client import AsyncBackchannel, Backchannel, BackchannelError, EventRejected, uuid7
from tests.servers import GatewayProcess, wait_for
from tests.standins import EventsRecorder

QUICK = Backoff(base=0.02, cap=0.1, give_up=10.0)


@pytest.fixture
def recorder():
    with EventsRecorder() as server:
        yield server


def sent_events(recorder: EventsRecorder) -> list[dict]:
    return [event for seen in recorder.seen for event in json.loads(seen.body)["events"]]


async def test_log_trace_against_the_gateway(harness):
    transport = httpx.ASGITransport(app=harness.app)
    async with AsyncBackchannel(harness.secret_key, "http://gateway.test", transport=transport) as bc:
        trace = await bc.log_trace("t-1", "s-1", user_id="u-1", model="model-a", template="answer",
                                   template_version="2", input="hi", output="hello", metadata={"attempt": 1})
        assert (trace.trace_id, trace.session_id) == ("t-1", "s-1") and trace.expires_at > time.time()
        claims = tokens.parse(trace.feedback_token).claims
        assert (claims.p, claims.t, claims.s) == (harness.public_key, "t-1", "s-1")
        stored = await harness.stored("t-1")
        assert {k: stored[k] for k in ("user_id", "model", "template", "template_version", "input", "output",
                                       "metadata")} == {"user_id": "u-1", "model": "model-a", "template": "answer",
                                                        "template_version": "2", "input": "hi", "output": "hello",
                                                        "metadata": {"attempt": 1}}
        again = await bc.log_trace("t-1", "s-1", output="hello again")  # an upsert, not an error
        assert again.trace_id == "t-1" and (await harness.stored("t-1"))["output"] == "hello again"
    async with AsyncBackchannel("sk_wrong", "http://gateway.test", transport=transport) as wrong:
        with pytest.raises(BackchannelError) as refused:
            await wrong.log_trace("t-2", "s-2")
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")


def test_sync_client_logs_a_trace_on_a_real_gateway_process(tmp_path):
    db = tmp_path / "bc.db"
    created = subprocess.run([sys.executable, "-m", "gateway", "project", "create", "--name", "c", "--origin", "*",
                              "--db", str(db)], capture_output=True, text=True, check=True, timeout=60)
    secret = json.loads(created.stdout)["secret_key"]
    server = GatewayProcess(db)
    server.start()
    try:
        with Backchannel(secret, server.url) as bc:
            trace = bc.log_trace("t-sync", "s-sync", model="model-b")
            assert tokens.parse(trace.feedback_token).claims.t == "t-sync"
            with pytest.raises(BackchannelError) as bad:
                bc.log_trace("", "s")  # the gateway's own schema refuses an empty id
            assert (bad.value.status, bad.value.code) == (400, "malformed")
    finally:
        server.stop()


def test_feedback_and_signal_post_one_tokenless_event_with_the_secret_key(recorder):
    with Backchannel("sk_test", recorder.url) as bc:
        vote = bc.feedback("t-42", "s-7", 0, reason="too_long", comment="Shorter.", ts=1764230400000)
        copied = bc.signal("copied", "t-42", "s-7", length=120)
    assert vote.status == copied.status == "accepted"
    assert all(seen.headers["authorization"] == "Bearer sk_test" for seen in recorder.seen)
    assert all(seen.headers["content-type"] == "application/json" for seen in recorder.seen)
    first, second = (json.loads(seen.body) for seen in recorder.seen)
    assert first == {"events": [{"id": vote.id, "type": "feedback", "trace_id": "t-42", "session_id": "s-7",
                                 "ts": 1764230400000, "value": 0, "reason": "too_long", "comment": "Shorter."}]}
    event = second["events"][0]
    assert (event["type"], event["length"], "token" in event) == ("copied", 120, False)
    assert abs(event["ts"] - time.time() * 1000) < 60_000
    assert uuid.UUID(event["id"]).version == 7


def test_the_project_is_sent_when_given(recorder):
    with Backchannel("sk_test", recorder.url, project="pk_abc") as bc:
        bc.feedback("t", "s", True)
    assert json.loads(recorder.seen[0].body)["project"] == "pk_abc"
    assert sent_events(recorder)[0]["value"] == 1


def test_5xx_is_retried_with_the_same_event_id(recorder):
    recorder.fail(2, 503)
    with Backchannel("sk_test", recorder.url, backoff=QUICK) as bc:
        result = bc.feedback("t", "s", 1)
    assert result.status == "accepted" and [s.status for s in recorder.seen] == [503, 503, 200]
    assert {e["id"] for e in sent_events(recorder)} == {result.id}


def test_429_waits_for_retry_after(recorder):
    recorder.fail(1, 429, {"Retry-After": "1"})
    with Backchannel("sk_test", recorder.url, backoff=QUICK) as bc:
        bc.signal("regenerated", "t", "s", attempt=2)
    refused, accepted = recorder.seen
    assert accepted.at - refused.at >= 1.0  # the backoff alone would have waited at most 0.02 s


def test_a_timed_out_event_is_retried_and_stored_once(recorder):
    recorder.slow(0.6, times=1)  # the first answer comes after the client gave up; the event still arrived
    with Backchannel("sk_test", recorder.url, timeout=0.3, backoff=QUICK) as bc:
        result = bc.signal("copied", "t", "s", length=3)
    wait_for(lambda: len(recorder.seen) == 2, what="the slow first request to finish")
    assert len(recorder.events) == 1 and {e["id"] for e in sent_events(recorder)} == {result.id}
    assert sorted(s.status for s in recorder.seen) == [200, 200]


def test_giving_up_raises(recorder):
    recorder.fail(10, 500)
    with Backchannel("sk_test", recorder.url, max_retries=2, backoff=QUICK) as bc:
        with pytest.raises(BackchannelError) as failed:
            bc.feedback("t", "s", 1)
    assert failed.value.status == 500 and len(recorder.seen) == 3
    recorder.stop()
    with Backchannel("sk_test", recorder.url, max_retries=1, backoff=QUICK) as bc:
        with pytest.raises(BackchannelError) as unreachable:
            bc.feedback("t", "s", 1)
    assert (unreachable.value.status, unreachable.value.code) == (0, "unreachable")


def test_refusals_are_not_retried(recorder):
    with Backchannel("sk_other", recorder.url, backoff=QUICK) as bc:
        with pytest.raises(BackchannelError) as refused:
            bc.feedback("t", "s", 1)
    assert (refused.value.status, refused.value.code) == (401, "unauthorized") and len(recorder.seen) == 1
    with Backchannel("sk_test", recorder.url, backoff=QUICK) as bc:
        with pytest.raises(EventRejected) as rejected:
            bc.feedback("t", "s", 0, reason="not_a_reason")
    assert rejected.value.code == "invalid_reason" and len(recorder.seen) == 2


async def test_async_events_retry_with_the_same_id(recorder):
    recorder.fail(1, 502)
    async with AsyncBackchannel("sk_test", recorder.url, backoff=QUICK) as bc:
        result = await bc.feedback("t", "s", 0, reason="other")
        duplicate_free = await bc.signal("abandoned", "t", "s")
    assert result.status == duplicate_free.status == "accepted"
    ids = [e["id"] for e in sent_events(recorder)]
    assert ids == [result.id, result.id, duplicate_free.id]


def test_keys_stay_out_of_reprs_and_public_keys_are_refused():
    assert "sk_secret" not in repr(Backchannel("sk_secret", "http://x"))
    with pytest.raises(ValueError):
        Backchannel("pk_public", "http://x")


def test_uuid7_is_version_7_and_time_ordered():
    first = uuid7()
    wait_for(lambda: time.time_ns() // 1_000_000 > first.int >> 80, what="the next millisecond")
    second = uuid7()
    assert first.version == second.version == 7 and first.variant == uuid.RFC_4122
    assert str(first) < str(second)


def test_an_answer_that_is_not_the_gateways_is_an_error_not_a_crash():
    def proxy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, html="<h1>Welcome to the captive portal</h1>")

    with Backchannel("sk_test", "http://gateway.test", transport=httpx.MockTransport(proxy)) as bc:
        for call in (lambda: bc.log_trace("t", "s"), lambda: bc.feedback("t", "s", 1)):
            with pytest.raises(BackchannelError) as failed:
                call()
            assert (failed.value.status, failed.value.code) == (200, "bad_answer")
