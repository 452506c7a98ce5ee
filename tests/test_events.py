"""`POST /v1/events`: every rule of the wire contract, every bad input, and nothing half-stored."""

from __future__ import annotations

import gzip
import json
import sqlite3

import pytest

from gateway import tokens
from tests.conftest import ORIGIN, running_gateway
from tests.events import event, feedback
from tests.servers import METRICS_AUTH


def count_events(db: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]


async def test_accepts_each_event_type_and_stores_it(harness):
    token = await harness.trace()
    batch = [
        event("shown", token=token),
        feedback(0, token=token, reason="too_long", comment="way too long", dwell_ms=1200),
        event("copied", token=token, length=42),
        event("edited", token=token, edit_ratio=0.25),
        event("regenerated", token=token, attempt=2),
        event("rephrased", token=token, similarity=0.8),
        event("abandoned", token=token),
    ]
    response = await harness.send(*batch)
    assert response.status_code == 200
    assert response.json() == {"results": [{"id": e["id"], "status": "accepted"} for e in batch]}
    stored = await harness.stored()
    assert [e["type"] for e in stored["events"]] == [e["type"] for e in batch]
    by_type = {e["type"]: e for e in stored["events"]}
    assert by_type["copied"]["length"] == 42
    assert by_type["edited"]["edit_ratio"] == 0.25
    assert by_type["regenerated"]["attempt"] == 2
    assert by_type["rephrased"]["similarity"] == 0.8
    assert by_type["feedback"]["dwell_ms"] == 1200
    assert all(e["session_id"] == "session-1" for e in stored["events"])
    assert stored["rating"] == [{"session_id": "session-1", "value": 0, "reason": "too_long",
                                 "comment": "way too long", "updated_at": stored["rating"][0]["updated_at"]}]
    assert stored["signals"] == {"shown": 1, "copied": 1, "edited": 1, "regenerated": 1, "rephrased": 1, "abandoned": 1}


async def test_text_plain_and_gzip_bodies_are_accepted(harness):
    token = await harness.trace()
    body = json.dumps({"project": harness.public_key, "events": [event(token=token)]}).encode()
    plain = await harness.client.post("/v1/events", content=body,
                                      headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": ORIGIN})
    assert plain.json()["results"][0]["status"] == "accepted"
    body = json.dumps({"project": harness.public_key, "events": [event(token=token)]}).encode()
    zipped = await harness.client.post("/v1/events", content=gzip.compress(body), headers={
        "Content-Type": "application/json", "Content-Encoding": "gzip", "Origin": ORIGIN})
    assert zipped.json()["results"][0]["status"] == "accepted"
    assert len((await harness.stored())["events"]) == 2


async def test_retried_event_is_a_duplicate_and_stored_once(harness):
    token = await harness.trace()
    first = event(token=token)
    assert (await harness.send(first)).json()["results"][0]["status"] == "accepted"
    again = await harness.send(first, first)
    assert [r["status"] for r in again.json()["results"]] == ["duplicate", "duplicate"]
    assert len((await harness.stored())["events"]) == 1


async def test_duplicate_ids_in_one_batch_store_once(harness):
    token = await harness.trace()
    one = event(token=token)
    response = await harness.send(one, one, event(token=token))
    assert [r["status"] for r in response.json()["results"]] == ["accepted", "duplicate", "accepted"]
    assert len((await harness.stored())["events"]) == 2


async def test_how_a_uuid_is_written_does_not_make_a_new_idempotency_key(harness):
    token = await harness.trace()
    one = event(token=token)
    assert (await harness.send(one)).json()["results"][0]["status"] == "accepted"
    for written in (one["id"].upper(), one["id"].replace("-", "")):
        result = (await harness.send({**one, "id": written})).json()["results"][0]
        assert result == {"id": one["id"], "status": "duplicate"}  # answered in canonical form
    for bad in ("{" + one["id"] + "}", one["id"][:-1], one["id"] + "0", "urn:uuid:" + one["id"]):
        assert (await harness.send({**one, "id": bad})).json()["results"][0]["error"] == "invalid_event"
    assert len((await harness.stored())["events"]) == 1


async def test_vote_change_keeps_one_current_vote_and_the_history(harness):
    token = await harness.trace()
    up = feedback(1, token=token)
    down = feedback(0, token=token, reason="wrong_information", ts=up["ts"] + 1000)
    comment = feedback(0, token=token, reason="wrong_information", comment="the date is wrong", ts=up["ts"] + 2000)
    for e in (up, down, comment):
        assert (await harness.send(e)).json()["results"][0]["status"] == "accepted"
    stored = await harness.stored()
    assert [e["value"] for e in stored["events"]] == [1, 0, 0]
    assert len(stored["rating"]) == 1
    assert stored["rating"][0]["value"] == 0
    assert stored["rating"][0]["comment"] == "the date is wrong"


async def test_late_retry_of_an_older_vote_does_not_undo_a_newer_one(harness):
    token = await harness.trace()
    newer = feedback(0, token=token, reason="other")
    older = feedback(1, token=token, ts=newer["ts"] - 5000)
    await harness.send(newer)
    await harness.send(older)
    assert (await harness.stored())["rating"][0]["value"] == 0


async def test_repeated_implicit_signals_count_once(harness):
    token = await harness.trace()
    await harness.send(event("copied", token=token, length=3), event("copied", token=token, length=9))
    stored = await harness.stored()
    assert len(stored["events"]) == 2
    assert stored["signals"] == {"copied": 1}


async def test_comment_is_scrubbed_before_it_is_stored(harness):
    token = await harness.trace()
    comment = "mail me at jane.doe@example.com or +1 415 555 0100, card 4111 1111 1111 1111"
    await harness.send(feedback(0, token=token, reason="other", comment=comment))
    stored = await harness.stored()
    saved = stored["events"][0]["comment"]
    assert "jane.doe" not in saved and "4111" not in saved and "555" not in saved
    assert "[email]" in saved and "[card]" in saved and "[phone]" in saved


@pytest.mark.parametrize("bad, error", [
    ({"type": "teleported"}, "unknown_type"),
    ({"type": "feedback", "value": 5}, "invalid_event"),
    ({"type": "feedback"}, "invalid_event"),
    ({"type": "feedback", "value": 0, "reason": "not_a_reason"}, "invalid_reason"),
    ({"type": "feedback", "value": 0, "comment": "x" * 1001}, "invalid_event"),
    ({"type": "copied", "length": -1}, "invalid_event"),
    ({"type": "copied", "length": 3, "text": "the copied text"}, "invalid_event"),
    ({"type": "edited", "edit_ratio": 1.5}, "invalid_event"),
    ({"type": "rephrased", "similarity": "high"}, "invalid_event"),
    ({"type": "shown", "id": "not-a-uuid"}, "invalid_event"),
    ({"type": "shown", "ts": "yesterday"}, "invalid_event"),
    ({"type": "shown", "trace_id": ""}, "invalid_event"),
    ({"type": "shown", "prompt": "what the user typed"}, "invalid_event"),
    ({"type": "shown", "padding": "x" * 33 * 1024}, "event_too_large"),
])
async def test_a_bad_event_is_rejected_without_sinking_its_neighbours(tmp_path, bad, error):
    async with running_gateway(str(tmp_path / "bc.db"), max_body_bytes=65536) as harness:
        token = await harness.trace()
        good_before, good_after = event(token=token), event(token=token)
        broken = {**event(token=token), **bad}
        response = await harness.send(good_before, broken, good_after)
        assert response.status_code == 200
        results = response.json()["results"]
        assert [r["status"] for r in results] == ["accepted", "rejected", "accepted"]
        assert results[1]["error"] == error
        assert [e["id"] for e in (await harness.stored())["events"]] == [good_before["id"], good_after["id"]]


async def test_tokens_bind_project_trace_session_and_expiry(harness):
    token = await harness.trace("trace-1", "session-1")
    other_trace_token = await harness.trace("trace-2", "session-1")
    expired, _ = tokens.mint(harness.secret_key, public_key=harness.public_key, trace_id="trace-1",
                             session_id="session-1", ttl=-10)
    other_key_token, _ = tokens.mint("sk_someone_else", public_key=harness.public_key, trace_id="trace-1",
                                     session_id="session-1", ttl=60)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    cases = [
        event(),  # no token on a token-requiring project
        event(token=other_trace_token),  # minted for another trace
        event(token=expired),
        event(token=other_key_token),
        event(token=forged),
        event(token="garbage"),
        event(token=token, session_id="session-2"),  # a session beside the token must match it
    ]
    response = await harness.send(*cases, event(token=token, session_id="session-1"))
    results = response.json()["results"]
    assert [r.get("error") for r in results] == ["invalid_token"] * len(cases) + [None]
    assert len((await harness.stored())["events"]) == 1


async def test_token_from_another_project_is_refused(tmp_path):
    async with running_gateway(str(tmp_path / "bc.db")) as harness:
        other, other_secret = await harness.gateway.store.create_project(name="other", origins=[ORIGIN])
        await harness.trace("trace-1")
        other_token, _ = tokens.mint(other_secret, public_key=other.public_key, trace_id="trace-1",
                                     session_id="session-1", ttl=60)
        response = await harness.send(event(token=other_token))
        assert response.json()["results"][0]["error"] == "invalid_token"


async def test_feedback_for_a_trace_never_logged_is_refused(tmp_path):
    async with running_gateway(str(tmp_path / "bc.db"), require_token=False) as harness:
        response = await harness.send(event(trace_id="never-logged", session_id="s"))
        assert response.json()["results"][0] == {"id": response.json()["results"][0]["id"], "status": "rejected",
                                                 "error": "unknown_trace"}
        assert count_events(harness.db) == 0


async def test_tokenless_project_needs_a_session_id(tmp_path):
    async with running_gateway(str(tmp_path / "bc.db"), require_token=False) as harness:
        await harness.trace()
        response = await harness.send(event(), event(session_id="tab-1"))
        assert [r.get("error") for r in response.json()["results"]] == ["missing_session", None]
        assert (await harness.stored())["events"][0]["session_id"] == "tab-1"


def problem(response) -> dict:
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == response.status_code and body["detail"]
    return body


@pytest.mark.parametrize("content, headers, status, code", [
    (b"{not json", {"Content-Type": "application/json"}, 400, "malformed"),
    (b'{"events": []}', {"Content-Type": "application/json"}, 400, "malformed"),
    (b'{"project": 5, "events": []}', {"Content-Type": "application/json"}, 400, "malformed"),
    (b'[1, 2]', {"Content-Type": "application/json"}, 400, "malformed"),
    (b"x", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
    (b"x", {"Content-Type": "application/json", "Content-Encoding": "br"}, 415, "unsupported_media_type"),
    (b"not gzip", {"Content-Type": "application/json", "Content-Encoding": "gzip"}, 400, "malformed"),
    (b"{" + b" " * 70000 + b"}", {"Content-Type": "application/json"}, 413, "too_large"),
    (gzip.compress(b"{" + b" " * 5_000_000 + b"}"), {"Content-Type": "application/json", "Content-Encoding": "gzip"},
     413, "too_large"),
])
async def test_whole_request_errors(harness, content, headers, status, code):
    response = await harness.client.post("/v1/events", content=content, headers={"Origin": ORIGIN, **headers})
    assert response.status_code == status
    assert problem(response)["type"] == f"urn:backchannel:problem:{code}"
    assert response.headers["access-control-allow-origin"] == ORIGIN  # the widget can read why
    assert count_events(harness.db) == 0
    assert (await harness.client.get("/healthz")).status_code == 200


async def test_an_accepted_batch_is_readable_cross_origin(harness):
    token = await harness.trace()
    response = await harness.send(event(token=token))
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert int(response.headers["content-length"]) == len(response.content)


async def test_the_route_also_answers_through_the_router_under_a_root_path(harness):
    """POST /v1/events skips Starlette's router only at the root; mounted under a prefix, the router takes it."""
    import httpx

    token = await harness.trace()
    transport = httpx.ASGITransport(app=harness.app, root_path="/bc", client=("203.0.113.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        one = event(token=token)
        response = await client.post("/bc/v1/events", json={"project": harness.public_key, "events": [one]},
                                     headers={"Origin": ORIGIN})
    assert response.status_code == 200 and response.json()["results"][0]["status"] == "accepted"
    assert [e["id"] for e in (await harness.stored())["events"]] == [one["id"]]


async def test_other_methods_on_the_events_route_are_405_naming_post(harness):
    response = await harness.client.get("/v1/events")
    assert response.status_code == 405 and response.headers["content-type"] == "application/problem+json"
    assert "POST" in response.headers["allow"]


async def test_unknown_project_wrong_origin_and_secret_key_on_browser_route(harness):
    token = await harness.trace()
    assert (await harness.send(event(token=token), project="pk_nope")).status_code == 401
    secret = await harness.send(event(token=token), project=harness.secret_key)
    assert secret.status_code == 401 and "secret keys never work" in problem(secret)["detail"]
    wrong = await harness.send(event(token=token), origin="https://evil.example")
    assert wrong.status_code == 403 and problem(wrong)["type"].endswith("origin_not_allowed")
    missing = await harness.send(event(token=token), origin=None)
    assert missing.status_code == 403
    assert count_events(harness.db) == 0


async def test_too_many_events_in_one_request(harness):
    token = await harness.trace()
    response = await harness.send(*[event(token=token) for _ in range(101)])
    assert response.status_code == 413
    assert count_events(harness.db) == 0


async def test_flood_is_answered_429_with_retry_after_and_stores_nothing_more(tmp_path):
    async with running_gateway(str(tmp_path / "bc.db"), limit_session="1/min burst 100") as harness:
        token = await harness.trace()
        ok = await harness.send(*[event(token=token) for _ in range(100)])
        assert ok.status_code == 200
        flood = await harness.send(event(token=token))
        assert flood.status_code == 429
        assert int(flood.headers["retry-after"]) >= 1
        assert flood.headers["access-control-expose-headers"] == "Retry-After"  # readable cross-origin
        assert problem(flood)["type"].endswith("rate_limited")
        assert count_events(harness.db) == 100
        # Another session of the same project is not starved by the first one.
        other = await harness.trace("trace-2", "session-2")
        assert (await harness.send(event(trace_id="trace-2", token=other))).status_code == 200
        metrics = (await harness.client.get("/metrics", headers=METRICS_AUTH)).text
        assert "backchannel_rate_limited_total 1" in metrics


async def test_cors_preflight_only_for_the_projects_origins(harness):
    def preflight(origin, project):
        return harness.client.options(f"/v1/events?project={project}", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})

    allowed = await preflight(ORIGIN, harness.public_key)
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    refused = await preflight("https://evil.example", harness.public_key)
    assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
    assert (await preflight(ORIGIN, "pk_unknown")).status_code == 403


async def test_store_that_cannot_commit_answers_503_and_the_server_keeps_serving(tmp_path):
    db = str(tmp_path / "bc.db")
    async with running_gateway(db, sqlite_busy_timeout_ms=100) as harness:
        token = await harness.trace()
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock past the busy timeout
        try:
            response = await harness.send(event(token=token))
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert count_events(db) == 0
        retried = await harness.send(event(token=token))
        assert retried.json()["results"][0]["status"] == "accepted"


async def test_metrics_count_outcomes(harness):
    token = await harness.trace()
    one = event(token=token)
    await harness.send(one, one, {**event(token=token), "type": "nope"})
    text = (await harness.client.get("/metrics", headers=METRICS_AUTH)).text
    assert 'backchannel_events_total{status="accepted"} 1' in text
    assert 'backchannel_events_total{status="duplicate"} 1' in text
    assert 'backchannel_events_rejected_total{error="unknown_type"} 1' in text
    assert "backchannel_commit_batch_events_count" in text


async def test_the_writer_runs_at_a_lower_priority_than_the_gateway(harness):
    import os

    from gateway.store.writer import WRITER_NICENESS

    def niceness(pid: int) -> int:
        with open(f"/proc/{pid}/stat") as file:
            return int(file.read().rpartition(")")[2].split()[16])

    assert niceness(harness.gateway.store.writer_pid) == min(19, niceness(os.getpid()) + WRITER_NICENESS)


async def test_writer_process_killed_answers_503_then_the_gateway_recovers(harness):
    import asyncio
    import os
    import signal

    token = await harness.trace()
    old_pid = harness.gateway.store.writer_pid
    in_flight = [asyncio.ensure_future(harness.send(event(token=token))) for _ in range(30)]
    await asyncio.sleep(0)
    os.kill(old_pid, signal.SIGKILL)
    # Every request in flight and sent meanwhile gets an answer (none hangs): 200 if its commit made it, else 503.
    answers = await asyncio.wait_for(asyncio.gather(*in_flight, *(harness.send(event(token=token)) for _ in range(30))),
                                     timeout=20)
    assert {a.status_code for a in answers} <= {200, 503}
    assert all(a.headers["retry-after"] == "1" for a in answers if a.status_code == 503)
    for _ in range(100):  # wait for the replacement, then kill it too and ask while it is down (before its restart)
        if harness.gateway.store.writer_pid != old_pid and await harness.gateway.store.ping():
            break
        await asyncio.sleep(0.05)
    second_pid = harness.gateway.store.writer_pid
    os.kill(second_pid, signal.SIGKILL)
    await asyncio.sleep(0.1)  # the gateway has seen it exit; its replacement comes 0.2 s later
    during = await asyncio.wait_for(harness.send(event(token=token)), timeout=20)
    assert during.status_code == 503 and during.headers["retry-after"] == "1"
    for _ in range(100):  # the gateway starts a new writer by itself
        retried = await harness.send(event(token=token))
        if retried.status_code == 200:
            break
        await asyncio.sleep(0.05)
    assert retried.json()["results"][0]["status"] == "accepted"
    assert harness.gateway.store.writer_pid not in (old_pid, second_pid)
    assert (await harness.client.get("/readyz")).status_code == 200


async def test_a_writer_that_stops_answering_gets_503_not_a_hung_request(harness, monkeypatch):
    import asyncio
    import os
    import signal

    from gateway.store.writer import WriterProcess

    monkeypatch.setattr(WriterProcess, "REPLY_TIMEOUT", 0.5)
    token = await harness.trace()
    pid = harness.gateway.store.writer_pid
    os.kill(pid, signal.SIGSTOP)  # alive but silent, as when stuck on a disk
    try:
        stuck = await asyncio.wait_for(harness.send(event(token=token)), timeout=10)
        assert stuck.status_code == 503 and stuck.json()["type"] == "urn:backchannel:problem:store_unavailable"
    finally:
        os.kill(pid, signal.SIGCONT)
    # Once it answers again, the gateway goes on with the same writer; the late reply is dropped.
    later = await harness.send(event(token=token))
    assert later.json()["results"][0]["status"] == "accepted"
    assert harness.gateway.store.writer_pid == pid


async def test_a_revoked_key_stops_working_in_a_running_gateway(harness):
    import asyncio

    from gateway import tokens as token_module
    from gateway.directory import Directory
    from gateway.store import create_store

    gateway = harness.gateway
    gateway.directory = Directory(gateway.store, gateway.tokens, key_ttl=0.1)  # the default is 5 s
    token = await harness.trace()
    assert (await harness.send(event(token=token))).json()["results"][0]["status"] == "accepted"
    other_process = create_store(gateway.settings, writer_process=False)  # as `backchannel project revoke-key` does
    await other_process.open()
    try:
        project = await other_process.project_by_public_key(harness.public_key)
        assert await other_process.revoke_secret_key(project.id, token_module.key_id(harness.secret_key))
    finally:
        await other_process.close()
    await asyncio.sleep(0.15)  # past the key cache's lifetime
    assert (await harness.send(event(token=token))).json()["results"][0]["error"] == "invalid_token"
    refused = await harness.client.post("/v1/traces", json={"trace_id": "t2", "session_id": "s"},
                                        headers={"Authorization": f"Bearer {harness.secret_key}"})
    assert refused.status_code == 401
