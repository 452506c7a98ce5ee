"""`GET /v1/traces/{id}` pages its events (`?limit=&after=`, `next_after`), caps a page, and keeps `rating` and
`signals` complete on every page; metadata stored before its bounds existed reads as null instead of a 500."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid

import pytest

from gateway.routes.traces import DEFAULT_EVENTS_PAGE, MAX_EVENTS_PAGE
from gateway.store import EventRow

EVENTS = 2 * DEFAULT_EVENTS_PAGE + 345
VOTERS = 30


async def fill(harness, trace_id: str = "trace-1") -> list[str]:
    """EVENTS events on one trace, written through the store (ids in the order written): VOTERS sessions vote, the
    rest copy."""
    await harness.trace(trace_id)
    project = await harness.gateway.store.project_by_public_key(harness.public_key)
    now = int(time.time() * 1000)
    rows = []
    for i in range(EVENTS):
        session = f"s{i % 50}"
        if i < VOTERS:
            rows.append(EventRow(uuid.uuid4(), trace_id, session, "feedback", i % 2, None, None, None, now + i, "h"))
        else:
            rows.append(EventRow(uuid.uuid4(), trace_id, session, "copied", None, None, None, '{"length": 3}', now + i,
                                 "h"))
    for start in range(0, EVENTS, 1000):
        outcomes = await harness.gateway.store.write_events(project.id, rows[start:start + 1000])
        assert set(outcomes) == {"accepted"}
    return [str(row.id) for row in rows]


async def get(harness, query: str = "", trace_id: str = "trace-1"):
    return await harness.client.get(f"/v1/traces/{trace_id}{query}",
                                    headers={"Authorization": f"Bearer {harness.secret_key}"})


async def test_pages_hold_every_event_once_in_order_and_rating_and_signals_whole(harness):
    ids = await fill(harness)
    seen, query, pages = [], "", 0
    while True:
        response = await get(harness, query)
        assert response.status_code == 200, response.text
        page = response.json()
        pages += 1
        assert len(page["events"]) <= DEFAULT_EVENTS_PAGE
        assert len(page["rating"]) == VOTERS  # the whole rating on every page
        assert page["signals"] == {"copied": 50}
        seen += [e["id"] for e in page["events"]]
        if page["next_after"] is None:
            break
        assert page["next_after"] == page["events"][-1]["id"]
        query = f"?after={page['next_after']}"
    assert seen == ids
    assert pages == 3


@pytest.mark.parametrize("limit", [1, 7, DEFAULT_EVENTS_PAGE + 1])
async def test_a_limit_sets_the_page_size(harness, limit):
    ids = await fill(harness)
    page = (await get(harness, f"?limit={limit}")).json()
    assert [e["id"] for e in page["events"]] == ids[:limit]
    assert page["next_after"] == ids[limit - 1]
    following = (await get(harness, f"?limit={limit}&after={page['next_after']}")).json()
    assert [e["id"] for e in following["events"]] == ids[limit:2 * limit]


async def test_the_last_page_ends_exactly(harness):
    ids = await fill(harness)
    assert len(ids) < MAX_EVENTS_PAGE
    whole = (await get(harness, f"?limit={MAX_EVENTS_PAGE}")).json()
    assert [e["id"] for e in whole["events"]] == ids and whole["next_after"] is None
    exact = (await get(harness, f"?limit={len(ids)}")).json()
    assert len(exact["events"]) == len(ids) and exact["next_after"] is None
    last = (await get(harness, f"?after={ids[-2]}")).json()
    assert [e["id"] for e in last["events"]] == ids[-1:] and last["next_after"] is None
    empty = (await get(harness, f"?after={ids[-1]}")).json()
    assert empty["events"] == [] and empty["next_after"] is None


@pytest.mark.parametrize("query", ["?limit=0", f"?limit={MAX_EVENTS_PAGE + 1}", "?limit=ten", "?limit=-1",
                                   "?limit=1e3", "?after=nope", f"?after={uuid.uuid4()}", "?limit=1&limit=2"])
async def test_a_bad_page_query_is_refused(harness, query):
    await fill(harness)
    response = await get(harness, query)
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "urn:backchannel:problem:invalid_parameter"


async def test_a_cursor_from_another_trace_is_refused(harness):
    await fill(harness)
    await harness.trace("other")
    other = (await get(harness, trace_id="trace-1")).json()["events"][0]["id"]
    response = await get(harness, f"?after={other}", trace_id="other")
    assert response.status_code == 400


async def test_metadata_stored_before_its_bounds_reads_as_null(harness):
    await harness.trace("t-deep", metadata={"ok": 1})
    with sqlite3.connect(harness.db) as conn:  # as the gateway stored it before metadata was bounded
        conn.execute("UPDATE traces SET metadata = ? WHERE trace_id = 't-deep'",
                     ('{"a": ' + "[" * 5000 + "]" * 5000 + "}",))
    response = await get(harness, trace_id="t-deep")
    assert response.status_code == 200, response.text
    assert response.json()["metadata"] is None
    with sqlite3.connect(harness.db) as conn:
        conn.execute("UPDATE traces SET metadata = ? WHERE trace_id = 't-deep'", (json.dumps({"ok": 2}),))
    assert (await get(harness, trace_id="t-deep")).json()["metadata"] == {"ok": 2}
