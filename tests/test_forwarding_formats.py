"""gateway/forwarding: each format against its stand-in (tests/standins.py), which checks every field, and delivery
outcomes when a destination fails on purpose."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import random
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from gateway import forwarding
from gateway.backoff import Backoff
from gateway.forwarding import (Dead, Delivered, LangfuseKeys, OutboxRecord, PostHogKey, Retry, WebhookSecret,
                                deliver, parse_signals)
from gateway.forwarding import langfuse, posthog, webhook
from tests.standins import LangfuseStandin, PostHogStandin, WebhookReceiver

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "pk_test_project"
TS = 1764230400123  # 2025-11-27T08:00:00.123Z
_seq = itertools.count(1)


def record(type: str = "feedback", *, trace_id: str = "trace-1", session_id: str = "session-1",
           **fields) -> OutboxRecord:
    base = dict(seq=next(_seq), event_id=str(uuid.uuid4()), project=PROJECT, trace_id=trace_id,
                session_id=session_id, type=type, ts=TS, user_id="user-9", model="model-a", template="answer")
    if type == "feedback":
        base["value"] = 1
    return OutboxRecord(**{**base, **fields})


@pytest.fixture
async def http():
    async with httpx.AsyncClient(timeout=2.0) as client:
        yield client


@pytest.fixture
def langfuse_standin():
    with LangfuseStandin() as server:
        yield server


@pytest.fixture
def posthog_standin():
    with PostHogStandin() as server:
        yield server


@pytest.fixture
def receiver():
    with WebhookReceiver(webhook.new_secret()) as server:
        yield server


def langfuse_to(server: LangfuseStandin, signals: str = "feedback") -> langfuse.Langfuse:
    return langfuse.Langfuse(server.url, LangfuseKeys(server.public_key, server.secret_key), parse_signals(signals))


# --- Langfuse ---

async def test_a_vote_becomes_a_boolean_score_on_the_trace(langfuse_standin, http):
    vote = record(value=0, reason="too_long", comment="Way too long.", props={"dwell_ms": 5400})
    assert await deliver(langfuse_to(langfuse_standin), [vote], http) == {vote.event_id: Delivered()}
    [(score_id, score)] = langfuse_standin.scores.items()
    assert score_id == langfuse.score_id(PROJECT, "trace-1", "session-1", "user-feedback")
    assert score == {"id": score_id, "traceId": "trace-1", "name": "user-feedback", "value": 0, "dataType": "BOOLEAN",
                     "comment": "Way too long.",
                     "metadata": {"source": "backchannel", "session_id": "session-1", "event_id": vote.event_id,
                                  "reason": "too_long", "dwell_ms": 5400}}
    up = record(event_id=str(uuid.uuid4()))
    await deliver(langfuse_to(langfuse_standin), [up], http)
    assert "comment" not in langfuse_standin.writes[-1] and "reason" not in langfuse_standin.writes[-1]["metadata"]


async def test_a_changed_vote_overwrites_the_same_score(langfuse_standin, http):
    votes = [record(value=0, reason="wrong_information"), record(value=0, reason="wrong_information", comment="Off."),
             record(value=1), record(value=1, session_id="session-2")]
    outcomes = await deliver(langfuse_to(langfuse_standin), votes, http)
    assert set(outcomes.values()) == {Delivered()}
    assert [w["id"] for w in langfuse_standin.writes[:3]] == [langfuse_standin.writes[0]["id"]] * 3
    assert len(langfuse_standin.scores) == 2  # one score per (trace, session)
    current = langfuse_standin.scores[langfuse.score_id(PROJECT, "trace-1", "session-1", "user-feedback")]
    assert current["value"] == 1 and "reason" not in current["metadata"]  # the change left no stale reason behind


async def test_score_ids_are_stable_and_unambiguous():
    same = langfuse.score_id("pk", "t", "s", "user-feedback")
    assert same == langfuse.score_id("pk", "t", "s", "user-feedback") and uuid.UUID(same).version == 5
    ids = {langfuse.score_id(*parts) for parts in [("pk", "t", "s", "copied"), ("pk", "t", "s", "user-feedback"),
                                                    ("pk", "t", "s2", "copied"), ("pk2", "t", "s", "copied"),
                                                    ("pk", 't", "s', "s", "copied"), ("pk", "t", '", "s', "copied")]}
    assert len(ids) == 6


async def test_implicit_signals_are_scores_named_after_the_signal_only_when_opted_in(langfuse_standin, http):
    copied = record("copied", props={"length": 120}, value=None)
    again = record("copied", props={"length": 80}, value=None)
    rephrased = record("rephrased", props={"similarity": 0.8}, value=None)
    only_votes = await deliver(langfuse_to(langfuse_standin), [copied], http)
    assert only_votes == {copied.event_id: Delivered()} and langfuse_standin.seen == []  # not opted in: nothing sent
    await deliver(langfuse_to(langfuse_standin, "feedback,copied,rephrased"), [copied, again, rephrased], http)
    assert len(langfuse_standin.scores) == 2  # a repeated signal of one session on one trace is one score
    score = langfuse_standin.scores[langfuse.score_id(PROJECT, "trace-1", "session-1", "copied")]
    assert score == {"id": score["id"], "traceId": "trace-1", "name": "copied", "value": 1, "dataType": "BOOLEAN",
                     "metadata": {"source": "backchannel", "session_id": "session-1", "event_id": again.event_id,
                                  "length": 80}}
    assert langfuse_standin.scores[langfuse.score_id(PROJECT, "trace-1", "session-1", "rephrased")]["metadata"][
        "similarity"] == 0.8


async def test_a_superseded_vote_is_not_sent_to_langfuse(langfuse_standin, http):
    current, older = record(value=1), record(value=0, superseded=True)
    outcomes = await deliver(langfuse_to(langfuse_standin), [current, older], http)
    assert set(outcomes.values()) == {Delivered()} and len(langfuse_standin.writes) == 1
    assert langfuse_standin.writes[0]["value"] == 1


async def test_wrong_langfuse_keys_are_dead_at_once_with_the_body_kept(langfuse_standin, http):
    wrong = langfuse.Langfuse(langfuse_standin.url, LangfuseKeys("pk-lf-test", "nope"))
    vote = record()
    outcome = (await deliver(wrong, [vote], http))[vote.event_id]
    assert isinstance(outcome, Dead) and outcome.error == "HTTP 401" and "Invalid public or secret key" in outcome.body
    assert "nope" not in repr(wrong) and "nope" not in repr(wrong.requests([vote], time.time()))


# --- PostHog ---

async def test_posthog_gets_one_batch_with_every_field(posthog_standin, http):
    destination = posthog.PostHog(posthog_standin.url, PostHogKey("phc_test"), frozenset(forwarding.SIGNALS))
    records = [record(value=0, reason="too_long", comment="call me on 555 0100", props={"dwell_ms": 900}),
               record("copied", value=None, props={"length": 42}),
               record("edited", value=None, props={"edit_ratio": 0.25}),
               record("regenerated", value=None, props={"attempt": 2}),
               record("rephrased", value=None, props={"similarity": 0.7}),
               record("abandoned", value=None, user_id=None, model=None, template=None),
               record("accepted", value=None, props={"how": "insert"})]
    outcomes = await deliver(destination, records, http)
    assert set(outcomes.values()) == {Delivered()} and len(posthog_standin.seen) == 1
    sent = json.loads(posthog_standin.seen[0].body)
    assert sent["api_key"] == "phc_test" and len(sent["batch"]) == 7
    events = posthog_standin.events
    assert [events[r.event_id]["event"] for r in records] == [
        "llm_feedback", "llm_response_copied", "llm_response_edited", "llm_response_regenerated",
        "llm_prompt_rephrased", "llm_session_abandoned", "llm_response_accepted"]
    vote = events[records[0].event_id]
    assert vote == {"event": "llm_feedback", "distinct_id": "user-9", "timestamp": "2025-11-27T08:00:00.123Z",
                    "uuid": records[0].event_id,
                    "properties": {"$ai_trace_id": "trace-1", "$ai_session_id": "session-1",
                                   "backchannel_project": PROJECT, "model": "model-a", "template": "answer",
                                   "value": 0, "has_comment": True, "reason": "too_long", "dwell_ms": 900}}
    assert "555" not in posthog_standin.seen[0].body.decode()  # no text the user typed
    assert events[records[2].event_id]["properties"]["edit_ratio"] == 0.25
    anonymous = events[records[5].event_id]
    assert anonymous["distinct_id"] == "session-1"  # no user_id on the trace: the session stands in
    assert anonymous["properties"] == {"$ai_trace_id": "trace-1", "$ai_session_id": "session-1",
                                       "backchannel_project": PROJECT, "$process_person_profile": False}


async def test_posthog_de_duplicates_a_resent_batch_by_uuid(posthog_standin, http):
    destination = posthog.PostHog(posthog_standin.url, PostHogKey("phc_test"))
    records = [record(), record(value=0)]
    await deliver(destination, records, http)
    await deliver(destination, records, http)  # at-least-once: a retry after a lost answer
    assert len(posthog_standin.events) == 2 and posthog_standin.duplicates == 2


async def test_posthog_batches_are_split_at_max_batch(posthog_standin, http):
    destination = posthog.PostHog(posthog_standin.url, PostHogKey("phc_test"))
    records = [record(session_id=f"s-{i}") for i in range(posthog.PostHog.max_batch + 3)]
    requests = destination.requests(records, time.time())
    assert [len(r.event_ids) for r in requests] == [posthog.PostHog.max_batch, 3]
    await deliver(destination, records, http)
    assert len(posthog_standin.events) == len(records)


async def test_a_bad_posthog_key_is_dead_and_the_stand_in_refuses_malformed_events(posthog_standin, http):
    vote = record()
    wrong = posthog.PostHog(posthog_standin.url, PostHogKey("phc_wrong"))
    outcome = (await deliver(wrong, [vote], http))[vote.event_id]
    assert isinstance(outcome, Dead) and "Project API key invalid" in outcome.body
    good = posthog.event(vote)
    for broken in ({**good, "uuid": "nope"}, {**good, "distinct_id": ""}, {**good, "timestamp": "yesterday"},
                   {**good, "extra": 1}, {k: v for k, v in good.items() if k != "event"}):
        response = await http.post(posthog_standin.url + "/batch/", json={"api_key": "phc_test", "batch": [broken]})
        assert response.status_code == 400, broken


# --- Webhooks ---

async def test_signed_webhooks_verify_and_carry_the_event(receiver, http):
    destination = webhook.Webhook(receiver.url, WebhookSecret(receiver.secret), parse_signals("feedback,copied"))
    vote = record(value=0, reason="too_long", comment="Shorter please.")
    copied = record("copied", value=None, props={"length": 12})
    assert set((await deliver(destination, [vote, copied], http)).values()) == {Delivered()}
    assert receiver.deliveries[vote.event_id] == {
        "type": "feedback.created", "timestamp": "2025-11-27T08:00:00.123Z",
        "data": {"id": vote.event_id, "project": PROJECT, "trace_id": "trace-1", "session_id": "session-1",
                 "user_id": "user-9", "model": "model-a", "template": "answer", "type": "feedback", "ts": TS,
                 "value": 0, "reason": "too_long", "comment": "Shorter please.", "props": {}}}
    assert receiver.deliveries[copied.event_id]["type"] == "signal.created"
    assert receiver.deliveries[copied.event_id]["data"]["props"] == {"length": 12}
    for seen in receiver.seen:
        assert webhook.verify(receiver.secret, seen.headers, seen.body, time.time())
        assert seen.headers["webhook-id"] in (vote.event_id, copied.event_id)
        assert not webhook.verify(receiver.secret, seen.headers, seen.body + b" ", time.time())
        assert not webhook.verify(webhook.new_secret(), seen.headers, seen.body, time.time())
        assert not webhook.verify(receiver.secret, seen.headers, seen.body, time.time() + 301)


async def test_a_receiver_refuses_a_bad_signature(receiver, http):
    wrong = webhook.Webhook(receiver.url, WebhookSecret(webhook.new_secret()))
    vote = record()
    outcome = (await deliver(wrong, [vote], http))[vote.event_id]
    assert isinstance(outcome, Dead) and receiver.deliveries == {}


def test_secrets_are_whsec_base64_of_32_bytes():
    import base64

    secret = webhook.new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    for bad in ("plain", "whsec_***"):
        with pytest.raises(ValueError):
            webhook.Webhook("http://x", WebhookSecret(bad))


def readme_block(language: str, marker: str) -> str:
    blocks = [b for b in re.findall(rf"```{language}\n(.*?)```", (ROOT / "README.md").read_text(), re.S) if marker in b]
    assert len(blocks) == 1, f"the README lost its {language} webhook verification snippet"
    return blocks[0]


def signed_sample() -> tuple[str, dict[str, str], bytes]:
    secret = webhook.new_secret()
    destination = webhook.Webhook("http://receiver.test/hook", WebhookSecret(secret))
    [request] = destination.requests([record(comment="ünïcode ✓")], time.time())
    return secret, dict(request.headers), request.body


def test_the_readme_python_snippet_is_the_tested_file_and_verifies():
    snippet = (ROOT / "docs/webhooks/verify.py").read_text()
    assert readme_block("python", "def verify_webhook") == snippet
    namespace: dict = {}
    exec(snippet, namespace)
    secret, headers, body = signed_sample()
    assert namespace["verify_webhook"](secret, headers, body) is True
    assert namespace["verify_webhook"](secret, headers, body.replace(b"1", b"0", 1)) is False
    assert namespace["verify_webhook"](webhook.new_secret(), headers, body) is False
    assert namespace["verify_webhook"](secret, {**headers, "webhook-timestamp": str(int(time.time()) - 301)},
                                       body) is False


def test_the_readme_node_snippet_is_the_tested_file_and_verifies():
    node = shutil.which("node")
    assert node, "node is part of this machine image; the README's snippet is checked with it"
    snippet = (ROOT / "docs/webhooks/verify.js").read_text()
    assert readme_block("js", "function verifyWebhook") == snippet
    secret, headers, body = signed_sample()
    cases = {"good": (secret, headers), "other secret": (webhook.new_secret(), headers),
             "old": (secret, {**headers, "webhook-timestamp": str(int(time.time()) - 301)}),
             "no signature": (secret, {k: v for k, v in headers.items() if k != "webhook-signature"})}
    script = snippet + "".join(
        f"console.log({json.dumps(name)}, verifyWebhook({json.dumps(s)}, {json.dumps(h)}, "
        f"Buffer.from({json.dumps(body.decode())})));\n" for name, (s, h) in cases.items())
    out = subprocess.run([node, "-e", script], capture_output=True, text=True, check=True, timeout=30).stdout
    assert out.splitlines() == ["good true", "other secret false", "old false", "no signature false"]


# --- Delivery outcomes when a destination fails ---

async def test_5xx_and_429_are_retried_honouring_retry_after(langfuse_standin, http):
    destination, vote = langfuse_to(langfuse_standin), record()
    langfuse_standin.fail(1, 503)
    outcome = (await deliver(destination, [vote], http, clock=lambda: 1000.0))[vote.event_id]
    assert isinstance(outcome, Retry) and outcome.error.startswith("HTTP 503") and outcome.not_before is None
    langfuse_standin.fail(1, 429, {"Retry-After": "30"})
    outcome = (await deliver(destination, [vote], http, clock=lambda: 1000.0))[vote.event_id]
    assert outcome == Retry(outcome.error, 1030.0)
    langfuse_standin.fail(1, 408)
    assert isinstance((await deliver(destination, [vote], http))[vote.event_id], Retry)
    assert (await deliver(destination, [vote], http)) == {vote.event_id: Delivered()}


async def test_a_retry_stops_that_traces_requests_so_nothing_overtakes_it(langfuse_standin, http):
    destination = langfuse_to(langfuse_standin)
    first, second, other = record(value=0), record(value=1), record(trace_id="trace-2")
    langfuse_standin.fail(1, 500)
    outcomes = await deliver(destination, [first, second, other], http, concurrency=1)
    assert isinstance(outcomes[first.event_id], Retry) and outcomes[second.event_id] == outcomes[first.event_id]
    assert outcomes[other.event_id] == Delivered()  # another trace does not wait for trace-1
    assert [json.loads(s.body)["traceId"] for s in langfuse_standin.seen] == ["trace-1", "trace-2"]


async def test_a_dead_request_does_not_stop_the_batch(langfuse_standin, http):
    destination = langfuse_to(langfuse_standin)
    first, second = record(value=0), record(value=1)
    langfuse_standin.fail(1, 400)
    outcomes = await deliver(destination, [first, second], http)
    assert isinstance(outcomes[first.event_id], Dead) and outcomes[second.event_id] == Delivered()


async def test_traces_go_out_side_by_side_up_to_the_concurrency(receiver, http):
    destination = webhook.Webhook(receiver.url, WebhookSecret(receiver.secret))
    receiver.slow(0.4)
    records = [record(trace_id=f"t-{i % 6}") for i in range(12)]
    assert set((await deliver(destination, records, http, concurrency=4)).values()) == {Delivered()}
    assert receiver.most_in_flight == 4 and len(receiver.deliveries) == 12


async def test_a_url_that_is_not_http_is_dead(http):
    vote = record()
    outcome = (await deliver(webhook.Webhook("ftp://example.com/hook", WebhookSecret(webhook.new_secret())), [vote],
                             http))[vote.event_id]
    assert isinstance(outcome, Dead) and "UnsupportedProtocol" in outcome.error


async def test_connection_refused_and_timeouts_are_retried(posthog_standin):
    destination = posthog.PostHog(posthog_standin.url, PostHogKey("phc_test"))
    vote = record()
    posthog_standin.stop()
    async with httpx.AsyncClient(timeout=0.3) as http:
        refused = (await deliver(destination, [vote], http))[vote.event_id]
        assert isinstance(refused, Retry) and refused.error.startswith("ConnectError")
        posthog_standin.start()
        posthog_standin.slow(1.0)
        timed_out = (await deliver(destination, [vote], http))[vote.event_id]
        assert isinstance(timed_out, Retry) and timed_out.error.startswith("ReadTimeout")
        posthog_standin.slow(0)
        assert (await deliver(destination, [vote], http)) == {vote.event_id: Delivered()}
    # The slow answer arrived after we gave up on it: at-least-once, and PostHog's de-duplication makes it once.
    assert len(posthog_standin.events) == 1


def arrivals(server) -> list[tuple[str, str]]:
    """(trace id, event id) of what a stand-in accepted, in arrival order (Langfuse: every write; the others: the first
    of each id, with resends counted in `duplicates`)."""
    if isinstance(server, LangfuseStandin):
        return [(w["traceId"], w["metadata"]["event_id"]) for w in server.writes]
    if isinstance(server, PostHogStandin):
        return [(e["properties"]["$ai_trace_id"], e["uuid"]) for e in server.events.values()]
    return [(d["data"]["trace_id"], d["data"]["id"]) for d in server.deliveries.values()]


@pytest.mark.parametrize("kind", ["langfuse", "posthog", "webhook"])
async def test_down_for_a_while_then_back_nothing_lost_nothing_duplicated(kind, http):
    """A small stand-in for the worker: resend what is not delivered, on the backoff schedule, until all arrives, while
    the destination answers 503s, then refuses connections, then comes back."""
    signals = parse_signals("feedback,copied")
    server = {"langfuse": LangfuseStandin, "posthog": PostHogStandin,
              "webhook": lambda: WebhookReceiver(webhook.new_secret())}[kind]()
    credentials = {"langfuse": lambda: LangfuseKeys(server.public_key, server.secret_key),
                   "posthog": lambda: PostHogKey(server.api_key), "webhook": lambda: WebhookSecret(server.secret)}
    destination = forwarding.create(kind, server.url, credentials[kind](), signals)
    # Langfuse keeps one score per (trace, session, signal): each record here has its own session, so each is a score.
    records = [record("copied" if i % 3 else "feedback", value=None if i % 3 else 1, trace_id=f"t-{i % 4}",
                      session_id=f"s-{i}", props={"length": i} if i % 3 else {}) for i in range(30)]
    with server:
        server.fail(5, 503)
        schedule, rng = Backoff(base=0.01, cap=0.05, give_up=30.0), random.Random(3)
        pending, attempt, started, rounds = list(records), 0, time.time(), 0
        while pending:
            rounds += 1
            if rounds == 3:
                server.stop()
            if rounds == 6:
                server.start()
            outcomes = await deliver(destination, pending, http)
            assert not any(isinstance(o, Dead) for o in outcomes.values())
            pending = [r for r in pending if not isinstance(outcomes[r.event_id], Delivered)]
            attempt = attempt + 1 if pending else 0
            if pending:
                at = schedule.next_attempt(attempt, time.time(), first_attempt_at=started, rand=rng.random())
                assert at is not None, "gave up"
                await asyncio.sleep(at - time.time())
        arrived = arrivals(server)
    assert rounds >= 6
    assert sorted(e for _, e in arrived) == sorted(r.event_id for r in records)  # all arrived
    assert getattr(server, "duplicates", 0) == 0  # and no answer was lost, so nothing was sent twice
    for trace in {r.trace_id for r in records}:  # and each trace's in commit order
        assert [e for t, e in arrived if t == trace] == [r.event_id for r in records if r.trace_id == trace]


@pytest.mark.parametrize("ms", [0, 1, 999, 1000, TS, 86_399_999, 951_782_400_000, 253_402_300_799_999])
def test_iso_ms_is_utc_iso_8601_with_milliseconds(ms):
    moment = datetime.datetime.fromtimestamp(ms // 1000, tz=datetime.timezone.utc)
    assert forwarding.iso_ms(ms) == moment.replace(tzinfo=None).isoformat() + f".{ms % 1000:03d}Z"
    assert forwarding.iso_ms(TS) == "2025-11-27T08:00:00.123Z"  # the shape, spelled out once


def test_parse_signals():
    assert parse_signals("feedback, copied") == {"feedback", "copied"}
    for bad in ("", "shown", "feedback,clicked"):
        with pytest.raises(ValueError):
            parse_signals(bad)


def test_create_checks_kind_against_credentials():
    assert isinstance(forwarding.create("posthog", "http://x", PostHogKey("phc")), posthog.PostHog)
    with pytest.raises(ValueError):
        forwarding.create("langfuse", "http://x", PostHogKey("phc"))
