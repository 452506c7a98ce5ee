"""gateway/store/outbox.py through a real gateway's store (writer process): outbox rows are written in the commit
that stores the event, for the destinations that want its type; superseded votes are marked; the lease has one
holder; removal, dead rows and their requeue."""

from __future__ import annotations

import sqlite3
import time

import pytest

from gateway.forwarding.crypto import generate_key
from gateway.store.outbox import Outcomes, Parked
from tests.conftest import running_gateway
from tests.events import event, feedback


@pytest.fixture
async def h(tmp_path):
    async with running_gateway(str(tmp_path / "bc.db"), encryption_key=generate_key()) as harness:
        await harness.gateway.forwarder.stop()  # these tests look at the outbox itself, undrained
        yield harness


def outbox_rows(db: str) -> list[tuple[str, str, int]]:
    """(destination, event id, superseded) in commit order."""
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT o.destination, e.id, o.superseded FROM outbox AS o JOIN events AS e"
                                 " ON e.seq = o.seq ORDER BY o.seq, o.destination"))


async def add(h, kind: str, signals: list[str]) -> str:
    body = {"kind": kind, "url": "http://127.0.0.1:9/x", "signals": signals}
    body |= {"langfuse": {"public_key": "pk-lf", "secret_key": "sk-lf"}, "posthog": {"api_key": "phc"}}.get(kind, {})
    response = await h.client.post("/v1/destinations", json=body, headers={"Authorization": f"Bearer {h.secret_key}"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def test_no_destination_no_outbox_row(h):
    token = await h.trace()
    response = await h.send(feedback(1, token=token), event("copied", token=token, length=3))
    assert [r["status"] for r in response.json()["results"]] == ["accepted", "accepted"]
    assert outbox_rows(h.db) == []


async def test_a_row_per_destination_that_wants_the_type_in_the_same_commit(h):
    lf, ph = await add(h, "langfuse", ["feedback"]), await add(h, "posthog", ["feedback", "copied"])
    token = await h.trace()
    now = int(time.time() * 1000)
    newer, older = feedback(0, token=token, ts=now), feedback(1, token=token, ts=now - 5000)
    copied, shown = event("copied", token=token, length=3), event("shown", token=token)
    await h.send(newer, copied, shown)
    await h.send(older)  # arrives later, clicked earlier: a log entry, not the current vote
    await h.send(newer)  # a duplicate: no second row
    await h.send(feedback(1, token="bc1.forged"))  # rejected: no row
    assert sorted(outbox_rows(h.db)) == sorted([(lf, newer["id"], 0), (ph, newer["id"], 0), (ph, copied["id"], 0),
                                                (lf, older["id"], 1), (ph, older["id"], 1)])
    # A destination added later receives only what is committed from then on.
    webhook = await add(h, "webhook", ["copied"])
    copied_again = event("copied", token=token, length=4)
    await h.send(copied_again)
    assert sorted(r for r in outbox_rows(h.db) if r[1] == copied_again["id"]) == sorted(
        [(ph, copied_again["id"], 0), (webhook, copied_again["id"], 0)])


async def test_outcomes_delete_delivered_park_dead_and_retry_dead_requeues(h):
    outbox = h.gateway.store.outbox
    destination = await add(h, "posthog", ["feedback"])
    token = await h.trace()
    votes = [feedback(i % 2, token=token, ts=int(time.time() * 1000) + i) for i in range(3)]
    await h.send(*votes)
    pending = await outbox.pending(destination, 10)
    assert [p.record.event_id for p in pending] == [v["id"] for v in votes]
    first, second, third = (p.record.seq for p in pending)
    await outbox.record_outcomes(Outcomes(destination, [first], [], [Parked(second, 1, "HTTP 400", "no")], "HTTP 400"))
    counts = await outbox.counts(destination)
    assert (counts.queued, counts.delivered, counts.dead, counts.last_error) == (1, 1, 1, "HTTP 400")
    assert (await outbox.dead_records(destination))[0]["body"] == "no"
    project = h.gateway.store
    project_id = (await project.project_by_public_key(h.public_key)).id
    assert await outbox.retry_dead(project_id, destination) == 1
    assert [p.record.seq for p in await outbox.pending(destination, 10)] == [second, third]
    assert await outbox.retry_dead(project_id + 1, destination) == -1  # another project's: not found
    assert await outbox.remove(project_id, destination)
    assert outbox_rows(h.db) == [] and await outbox.destinations() == []


async def test_the_lease_has_one_holder_until_it_expires_or_is_dropped(h):
    outbox = h.gateway.store.outbox
    assert await outbox.take_lease("a", 60)
    assert not await outbox.take_lease("b", 60)
    assert await outbox.take_lease("a", 60)  # renewed
    await outbox.drop_lease("a")
    assert await outbox.take_lease("b", 0.01)
    time.sleep(0.02)  # noqa: ASYNC251  # expiry is the point: the clock has to pass it
    assert await outbox.take_lease("a", 60)


async def test_server_side_ingest_takes_tokenless_events_with_the_secret_key(h):
    await h.trace("t1", "s1")
    bearer = {"Authorization": f"Bearer {h.secret_key}"}
    vote = feedback(1, trace_id="t1", session_id="s1")
    response = await h.client.post("/v1/events", json={"events": [vote]}, headers=bearer)
    assert response.json()["results"] == [{"id": vote["id"], "status": "accepted"}]
    again = await h.client.post("/v1/events", json={"project": h.public_key, "events": [vote]}, headers=bearer)
    assert again.json()["results"][0]["status"] == "duplicate"
    rejected = await h.client.post("/v1/events", headers=bearer, json={"events": [
        feedback(1, trace_id="t1"), feedback(1, trace_id="nope", session_id="s1"),
        feedback(1, trace_id="t1", session_id="s1", reason="not_a_reason"),
        feedback(1, trace_id="t1", session_id="s1", token="bc1.x"), {"id": "x", "type": "feedback"}]})
    assert [r.get("error") for r in rejected.json()["results"]] == [
        "missing_session", "unknown_trace", "invalid_reason", "invalid_token", "invalid_event"]


@pytest.mark.parametrize("headers, body, status, code", [
    ({"Authorization": "Bearer sk_unknown"}, {"events": []}, 401, "unauthorized"),
    ({"Authorization": "Basic abc"}, {"events": []}, 401, "unauthorized"),
    ({"Authorization": "Bearer {pk}"}, {"events": []}, 401, "unauthorized"),
    ({"Authorization": "Bearer {sk}"}, {"project": "pk_other", "events": []}, 400, "malformed"),
    ({"Authorization": "Bearer {sk}"}, {"events": [], "extra": 1}, 400, "malformed"),
    ({"Authorization": "Bearer {sk}"}, {"events": [{}] * 101}, 413, "too_large"),
])
async def test_server_side_ingest_refuses(h, headers, body, status, code):
    headers = {k: v.format(pk=h.public_key, sk=h.secret_key) for k, v in headers.items()}
    response = await h.client.post("/v1/events", json=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["type"].endswith(code)


async def test_destinations_need_the_encryption_key(tmp_path):
    async with running_gateway(str(tmp_path / "bc.db")) as h:
        response = await h.client.post("/v1/destinations", json={"kind": "webhook", "url": "https://x.example/h"},
                                       headers={"Authorization": f"Bearer {h.secret_key}"})
        assert response.status_code == 503 and response.json()["type"].endswith("not_configured")
        assert "BACKCHANNEL_ENCRYPTION_KEY" in response.json()["detail"]


async def test_a_project_has_at_most_twenty_destinations(h):
    for _ in range(20):
        await add(h, "webhook", ["feedback"])
    response = await h.client.post("/v1/destinations", json={"kind": "webhook", "url": "https://x.example/h"},
                                   headers={"Authorization": f"Bearer {h.secret_key}"})
    assert response.status_code == 409 and response.json()["type"].endswith("limit_reached")
