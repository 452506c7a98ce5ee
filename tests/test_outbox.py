"""gateway/store/outbox.py through a real gateway's store (writer process): a destination's queue is the log after its
cursor, the stored events of the types it wants, and storing an event writes no row; superseded votes are marked; the
cursor moves past what a round dealt with, and what it passes undelivered (a retry, a record held behind its trace) gets
a row; the lease has one holder; removal, dead rows and their requeue."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from contextlib import closing

import httpx
import pytest

from gateway import forwarding
from gateway.forwarding.crypto import generate_key
from gateway.forwarding.posthog import PostHog
from gateway.forwarding.worker import Worker
from gateway.schemas import TraceIn
from gateway.store import EventRow, tables
from gateway.store import outbox as outbox_tables
from gateway.store.outbox import Outcomes, Parked, Retried
from tests.conftest import running_gateway
from tests.events import event, feedback
from tests.standins import PostHogStandin


@pytest.fixture
async def h(tmp_path):
    async with running_gateway(str(tmp_path / "bc.db"), encryption_key=generate_key()) as harness:
        await harness.gateway.forwarder.stop()  # these tests look at the outbox itself, undrained
        yield harness


def outbox_rows(db: str) -> list[tuple[str, str, int]]:
    """The rows of the `outbox` table: (destination, event id, superseded) in commit order."""
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT o.destination, e.id, o.superseded FROM outbox AS o JOIN events AS e"
                                 " ON e.seq = o.seq ORDER BY o.seq, o.destination"))


def queued(db: str) -> list[tuple[str, str, int]]:
    """Every destination's queue (rows and log): (destination, event id, superseded)."""
    with sqlite3.connect(db) as conn:
        return [(d.id, p.record.event_id, int(p.record.superseded)) for d in outbox_tables.destinations(conn)
                for p in outbox_tables.pending(conn, d.id, 1000).records]


async def add(h, kind: str, signals: list[str]) -> str:
    body = {"kind": kind, "url": "http://127.0.0.1:9/x", "signals": signals}
    body |= {"langfuse": {"public_key": "pk-lf", "secret_key": "sk-lf"}, "posthog": {"api_key": "phc"}}.get(kind, {})
    response = await h.client.post("/v1/destinations", json=body, headers={"Authorization": f"Bearer {h.secret_key}"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def test_no_destination_nothing_queued(h):
    token = await h.trace()
    response = await h.send(feedback(1, token=token), event("copied", token=token, length=3))
    assert [r["status"] for r in response.json()["results"]] == ["accepted", "accepted"]
    assert outbox_rows(h.db) == [] and queued(h.db) == []


async def test_each_destination_queues_the_stored_events_it_wants_without_a_row(h):
    lf, ph = await add(h, "langfuse", ["feedback"]), await add(h, "posthog", ["feedback", "copied"])
    token = await h.trace()
    now = int(time.time() * 1000)
    newer, older = feedback(0, token=token, ts=now), feedback(1, token=token, ts=now - 5000)
    copied, shown = event("copied", token=token, length=3), event("shown", token=token)
    await h.send(newer, copied, shown)
    await h.send(older)  # arrives later, clicked earlier: a log entry, not the current vote
    await h.send(newer)  # a duplicate: no second row
    await h.send(feedback(1, token="bc1.forged"))  # rejected: not queued
    assert sorted(queued(h.db)) == sorted([(lf, newer["id"], 0), (ph, newer["id"], 0), (ph, copied["id"], 0),
                                           (lf, older["id"], 1), (ph, older["id"], 1)])
    assert outbox_rows(h.db) == []  # storing an event wrote nothing for it
    # A destination added later receives only what is committed from then on.
    webhook = await add(h, "webhook", ["copied"])
    copied_again = event("copied", token=token, length=4)
    await h.send(copied_again)
    assert sorted(r for r in queued(h.db) if r[1] == copied_again["id"]) == sorted(
        [(ph, copied_again["id"], 0), (webhook, copied_again["id"], 0)])
    assert [r for r in queued(h.db) if r[0] == webhook] == [(webhook, copied_again["id"], 0)]


async def test_the_cursor_moves_past_what_a_round_dealt_with_and_rows_what_it_passes_undelivered(h):
    outbox = h.gateway.store.outbox
    destination = await add(h, "webhook", ["copied"])
    first, second = await h.trace("t-1"), await h.trace("t-2")
    sent = [event("copied", trace_id="t-1", token=first, length=1), event("shown", trace_id="t-1", token=first),
            event("copied", trace_id="t-2", token=second, length=2),
            event("copied", trace_id="t-1", token=first, length=3)]
    response = await h.send(*sent)
    assert [r["status"] for r in response.json()["results"]] == ["accepted"] * 4
    window = await outbox.pending(destination, 1000)
    assert [p.record.event_id for p in window.records] == [sent[0]["id"], sent[2]["id"], sent[3]["id"]]
    assert window.end > window.cursor and window.end == window.records[-1].record.seq
    retry, delivered, held = window.records  # t-1's first waits for a retry, so t-1's later one is held back
    now = time.time()
    await outbox.record_outcomes(Outcomes(destination, [delivered.record.seq],
                                          [Retried(retry.record.seq, 1, now, now + 60)], [], "HTTP 503", window.end))
    # The rows: the retry and the record held behind it; the delivered one left no trace but the count.
    assert outbox_rows(h.db) == [(destination, sent[0]["id"], 0), (destination, sent[3]["id"], 0)]
    again = await outbox.pending(destination, 1000)
    assert [(p.record.event_id, p.attempts, p.next_try_at) for p in again.records] == [
        (sent[0]["id"], 1, now + 60), (sent[3]["id"], 0, 0)]
    assert again.cursor == window.end
    counts = await outbox.counts(destination)
    assert (counts.queued, counts.delivered) == (2, 1)
    # Events it does not want move the window's end, not its records: the worker moves the cursor past them.
    await h.send(event("shown", trace_id="t-2", token=second))
    later = await outbox.pending(destination, 1000)
    assert later.end > later.cursor == window.end and len(later.records) == 2
    await outbox.record_outcomes(Outcomes(destination, [], [], [], None, later.end))
    assert (await outbox.pending(destination, 1000)).cursor == later.end and len(outbox_rows(h.db)) == 2
    # A full window of rows leaves the log unread: the window ends at the cursor.
    assert (await outbox.pending(destination, 2)).end == later.end


async def test_a_round_sends_its_whole_window_and_one_that_did_not_fill_waits_for_the_next_poll(h, monkeypatch):
    monkeypatch.setattr(PostHog, "round_size", 4)
    outbox = h.gateway.store.outbox
    sink = PostHogStandin().start()
    try:
        response = await h.client.post("/v1/destinations", headers={"Authorization": f"Bearer {h.secret_key}"},
                                       json={"kind": "posthog", "url": sink.url, "api_key": sink.api_key,
                                             "signals": ["copied"]})
        assert response.status_code == 201, response.text
        token = await h.trace()
        sent = [event("copied", token=token, length=i) for i in range(6)]
        await h.send(*sent)
        stored, = await outbox.destinations()
        destination = forwarding.create(stored.kind, stored.url, h.gateway.vault.open(stored.credentials),
                                        frozenset(stored.signals))
        worker = Worker(outbox, h.gateway.vault, poll=0.25)
        async with httpx.AsyncClient() as client:
            assert await worker._drain(stored, destination, client) == 0.0  # a full window: more may be due now
            assert await worker._drain(stored, destination, client) == 0.25  # the rest: it waits for more to gather
        assert [len(json.loads(seen.body)["batch"]) for seen in sink.seen] == [4, 2]  # one request a round
        assert list(sink.events) == [e["id"] for e in sent]
        assert (await outbox.counts(stored.id)).delivered == 6
    finally:
        sink.stop()


async def test_outcomes_delete_delivered_park_dead_and_retry_dead_requeues(h):
    outbox = h.gateway.store.outbox
    destination = await add(h, "posthog", ["feedback"])
    token = await h.trace()
    votes = [feedback(i % 2, token=token, ts=int(time.time() * 1000) + i) for i in range(3)]
    await h.send(*votes)
    pending = (await outbox.pending(destination, 10)).records
    assert [p.record.event_id for p in pending] == [v["id"] for v in votes]
    first, second, third = (p.record.seq for p in pending)
    await outbox.record_outcomes(Outcomes(destination, [first], [], [Parked(second, 1, "HTTP 400", "no")], "HTTP 400",
                                          upto=second))
    counts = await outbox.counts(destination)
    assert (counts.queued, counts.delivered, counts.dead, counts.last_error) == (1, 1, 1, "HTTP 400")
    assert (await outbox.dead_records(destination))[0]["body"] == "no"
    project = h.gateway.store
    project_id = (await project.project_by_public_key(h.public_key)).id
    assert await outbox.retry_dead(project_id, destination) == 1
    assert [p.record.seq for p in (await outbox.pending(destination, 10)).records] == [second, third]
    assert await outbox.retry_dead(project_id + 1, destination) == -1  # another project's: not found
    assert await outbox.remove(project_id, destination)
    assert outbox_rows(h.db) == [] and await outbox.destinations() == [] and queued(h.db) == []
    assert await outbox.counts(destination) is None  # as a listing that raced the removal finds it


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


def test_a_version_3_file_keeps_its_queued_rows_and_queues_from_the_log_after_them(tmp_path):
    path = str(tmp_path / "bc.db")
    with closing(tables.connect(path)) as conn:
        with tables.transaction(conn):
            project, _ = tables.create_project(conn, name="p", origins=["*"])
            tables.upsert_trace(conn, project.id, TraceIn(trace_id="t", session_id="s"))
            destination = outbox_tables.add_destination(conn, project.id, "webhook", "http://127.0.0.1:9/x",
                                                        ["copied"], b"sealed")
        rows = [EventRow(str(uuid.uuid4()), "t", "s", "copied", None, None, None, None, 1, "h") for _ in range(3)]
        with tables.transaction(conn):
            tables.insert_event_batches(conn, [(project.id, rows[:2])], {})
            # As version 3 left it: the commit wrote a row per queued event, and there was no cursor.
            conn.execute("INSERT INTO outbox (destination, seq, superseded) SELECT ?, seq, 0 FROM events",
                         (destination,))
        conn.execute("ALTER TABLE destinations DROP COLUMN cursor")
        conn.execute("PRAGMA user_version = 3")
    with closing(tables.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == tables.SCHEMA_VERSION == 4
        with tables.transaction(conn):
            tables.insert_event_batches(conn, [(project.id, rows[2:])], {})
        window = outbox_tables.pending(conn, destination, 1000)
    assert [p.record.event_id for p in window.records] == [row.id for row in rows]  # 2 rows, then 1 from the log
    assert window.cursor == 2 and window.end == 3
