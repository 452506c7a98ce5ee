"""Request bodies have one reading: gzip is one whole member and nothing after it, Content-Type and Content-Encoding
come once, and the charset (if any) is UTF-8. On both routes that read a body."""

from __future__ import annotations

import gzip

import msgspec
import pytest

from tests.conftest import ORIGIN
from tests.events import event


def events_body(harness, token: str) -> bytes:
    return msgspec.json.encode({"project": harness.public_key, "events": [event(token=token)]})


def trace_body() -> bytes:
    return msgspec.json.encode({"trace_id": "t-body", "session_id": "s"})


async def post(harness, route: str, body: bytes, headers: list[tuple[str, str]]):
    auth = [("Origin", ORIGIN)] if route == "/v1/events" else [("Authorization", f"Bearer {harness.secret_key}")]
    return await harness.client.post(route, content=body, headers=[*auth, *headers])


@pytest.fixture(params=["/v1/events", "/v1/traces"])
async def route(request, harness):
    token = await harness.trace()
    body = events_body(harness, token) if request.param == "/v1/events" else trace_body()
    return request.param, body


JSON = ("Content-Type", "application/json")
GZIP = ("Content-Encoding", "gzip")


@pytest.mark.parametrize("make, headers, status, code", [
    (lambda b: gzip.compress(b) + b"garbage", [JSON, GZIP], 400, "malformed"),
    (lambda b: gzip.compress(b) + gzip.compress(b"{}"), [JSON, GZIP], 400, "malformed"),
    (lambda b: gzip.compress(b) + b"\0" * 8, [JSON, GZIP], 400, "malformed"),
    (lambda b: gzip.compress(b), [JSON, GZIP, ("Content-Encoding", "identity")], 400, "malformed"),
    (lambda b: gzip.compress(b), [JSON, GZIP, GZIP], 400, "malformed"),
    (lambda b: b, [JSON, ("Content-Type", "application/json")], 400, "malformed"),
    (lambda b: b, [JSON, ("Content-Type", "text/html")], 400, "malformed"),
    (lambda b: b, [("Content-Type", "application/json; charset=utf-16")], 415, "unsupported_media_type"),
    (lambda b: b, [("Content-Type", "application/json; charset=latin-1")], 415, "unsupported_media_type"),
    (lambda b: b, [("Content-Type", "application/json; charset=utf-8; charset=utf-16")], 415,
     "unsupported_media_type"),
    (lambda b: b, [("Content-Type", "application/json; charset")], 415, "unsupported_media_type"),
])
async def test_a_body_with_more_than_one_reading_is_refused(harness, route, make, headers, status, code):
    path, body = route
    response = await post(harness, path, make(body), headers)
    assert response.status_code == status, response.text
    assert response.json()["type"] == f"urn:backchannel:problem:{code}"


@pytest.mark.parametrize("make, headers", [
    (lambda b: b, [JSON]),
    (lambda b: b, [("Content-Type", "application/json; charset=utf-8")]),
    (lambda b: b, [("Content-Type", 'application/json;charset="UTF-8"')]),
    (lambda b: b, [("Content-Type", "Application/JSON ; Charset=utf8")]),
    (lambda b: gzip.compress(b), [JSON, GZIP]),
])
async def test_one_reading_is_taken(harness, route, make, headers):
    path, body = route
    response = await post(harness, path, make(body), headers)
    assert response.status_code in (200, 201), response.text
