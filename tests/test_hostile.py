"""Hostile bodies on every route that reads one: refused with a documented 400, never a 500 or a traceback."""

from __future__ import annotations

import logging

import msgspec
import pytest

from tests.events import event, feedback

DEEP = 1000  # msgspec raises RecursionError near this depth


def nested_metadata(levels: int) -> dict:
    value: object = 1
    for _ in range(levels - 1):
        value = {"k": value}
    return {"top": value}


async def post(harness, route: str, body: bytes):
    """A raw JSON body to a route, with everything else it needs to get past the door (secret key, origin)."""
    return await harness.client.post(route, content=body, headers={
        "Authorization": f"Bearer {harness.secret_key}", "Content-Type": "application/json",
        "Origin": "https://chat.example.com"})


def deep(levels: int = DEEP) -> bytes:
    return b"[" * levels + b"]" * levels


@pytest.mark.parametrize("route, body", [
    ("/v1/traces", b'{"trace_id": "t", "session_id": "s", "metadata": {"a": ' + deep() + b"}}"),
    ("/v1/traces", b'{"trace_id": "t", "session_id": "s", "input": ' + deep() + b"}"),
    ("/v1/traces", b"[" * 100_000),
    ("/v1/events", b'{"project": "pk_x", "events": [' + deep() + b"]}"),
    ("/v1/events", b'{"project": "pk_x", "events": [{"id": ' + deep() + b"}]}"),
    ("/v1/events", b'{"project": "pk_x", "events": [], "x": ' + deep() + b"}"),
    ("/v1/events", b"[" * 60_000),
])
async def test_a_deeply_nested_body_is_refused_with_400(harness, route, body, caplog):
    caplog.set_level(logging.DEBUG)
    response = await post(harness, route, body)
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "urn:backchannel:problem:malformed"
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("metadata, detail", [
    (nested_metadata(9), "metadata: nested deeper than 8 levels"),
    ({"n": 2**63}, "metadata: an integer is outside the signed 64-bit range"),
    ({"n": [-(2**63) - 1]}, "metadata: an integer is outside the signed 64-bit range"),
    ({"n": 10**400}, "metadata: an integer is outside the signed 64-bit range"),
    ({"blob": "x" * 16_400}, "metadata: 16411 bytes encoded; at most 16384"),
])
async def test_metadata_out_of_bounds_is_refused_and_nothing_is_stored(harness, metadata, detail):
    response = await post(harness, "/v1/traces", msgspec.json.encode({"trace_id": "t-meta", "session_id": "s",
                                                                       "metadata": metadata}))
    assert response.status_code == 400, response.text
    assert response.json()["detail"] == detail
    missing = await harness.client.get("/v1/traces/t-meta", headers={"Authorization": f"Bearer {harness.secret_key}"})
    assert missing.status_code == 404


async def test_metadata_at_its_bounds_is_stored_and_read_back(harness):
    metadata = {**nested_metadata(8), "max": 2**63 - 1, "min": -(2**63), "f": 1.5, "blob": "x" * 15_000}
    await harness.trace("t-edge", metadata=metadata)
    assert (await harness.stored("t-edge"))["metadata"] == metadata


async def test_a_nested_event_within_the_body_bound_rejects_only_itself(harness):
    # 32 levels in all fit the body bound: the bad event is rejected on its own, its neighbour is stored.
    token = await harness.trace()
    nested = event(token=token)
    nested["extra"] = msgspec.json.decode(deep(29))
    response = await harness.send(event(token=token), nested)
    assert [r["status"] for r in response.json()["results"]] == ["accepted", "rejected"]


@pytest.mark.parametrize("field, value", [("length", 10**300), ("dwell_ms", 10**300), ("ts", 10**20),
                                          ("length", -1), ("attempt", 0)])
async def test_numbers_out_of_range_reject_the_event(harness, field, value):
    token = await harness.trace()
    kind = {"length": "copied", "attempt": "regenerated"}.get(field, "shown")
    fields = {"length": 1} if kind == "copied" else {"attempt": 1} if kind == "regenerated" else {}
    response = await harness.send(event(kind, token=token, **{**fields, field: value}))
    assert response.json()["results"][0] == {"id": response.json()["results"][0]["id"], "status": "rejected",
                                             "error": "invalid_event"}


async def test_a_vote_from_the_future_does_not_lock_the_session(harness):
    token = await harness.trace()
    await harness.send(feedback(0, token=token, ts=4_102_444_799_999))  # 2099
    await harness.send(feedback(1, token=token))  # now: the newer vote
    assert [r["value"] for r in (await harness.stored())["rating"]] == [1]


@pytest.mark.parametrize("route, body", [
    ("/v1/traces", b'{"trace_id": "t", "session_id": "s", "' + b"k" * 100_000 + b'": 1}'),
    ("/v1/events", b'{"project": "pk_x", "events": [], "' + b"k" * 60_000 + b'": 1}'),
])
async def test_a_problem_never_echoes_the_whole_input(harness, route, body):
    # msgspec names an unknown field whole in its error; the answer quotes at most 300 characters of it.
    response = await post(harness, route, body)
    assert response.status_code == 400
    assert len(response.json()["detail"]) <= 301 and response.json()["detail"].endswith("…")


async def test_a_long_unknown_path_is_not_echoed_whole(harness):
    response = await harness.client.get("/" + "p" * 20_000)
    assert response.status_code == 404 and len(response.json()["detail"]) <= 301
