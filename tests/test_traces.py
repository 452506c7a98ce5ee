from __future__ import annotations

from gateway import tokens
from tests.conftest import running_gateway


async def test_trace_upsert_is_idempotent_and_returns_a_working_token(harness):
    auth = {"Authorization": f"Bearer {harness.secret_key}"}
    body = {"trace_id": "t-9", "session_id": "s-9", "model": "model-a", "template": "answer", "template_version": "3",
            "input": "hi", "output": "hello", "metadata": {"attempt": 1}, "user_id": "u-1"}
    first = await harness.client.post("/v1/traces", json=body, headers=auth)
    assert first.status_code == 201
    again = await harness.client.post("/v1/traces", json={**body, "output": "hello again"}, headers=auth)
    assert again.status_code == 200
    claims = tokens.parse(first.json()["feedback_token"]).claims
    assert (claims.p, claims.t, claims.s) == (harness.public_key, "t-9", "s-9")
    stored = await harness.stored("t-9")
    assert stored["output"] == "hello again" and stored["model"] == "model-a" and stored["metadata"] == {"attempt": 1}
    assert stored["events"] == [] and stored["rating"] == []


async def test_server_routes_refuse_public_keys_missing_and_unknown_secrets(harness):
    body = {"trace_id": "t", "session_id": "s"}
    for headers in ({}, {"Authorization": f"Bearer {harness.public_key}"}, {"Authorization": "Bearer sk_unknown"},
                    {"Authorization": f"Basic {harness.secret_key}"}):
        response = await harness.client.post("/v1/traces", json=body, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["content-type"] == "application/problem+json"
        assert (await harness.client.get("/v1/traces/t", headers=headers)).status_code == 401


async def test_bad_trace_bodies(harness):
    auth = {"Authorization": f"Bearer {harness.secret_key}"}
    for body in ({"session_id": "s"}, {"trace_id": "t", "session_id": 3}, {"trace_id": "t", "session_id": "s",
                                                                            "surprise": 1}):
        response = await harness.client.post("/v1/traces", json=body, headers=auth)
        assert response.status_code == 400 and response.json()["type"].endswith("malformed")
    response = await harness.client.post("/v1/traces", content=b"x", headers={**auth, "Content-Type": "text/plain"})
    assert response.status_code == 415
    assert (await harness.client.get("/v1/traces/nope", headers=auth)).status_code == 404


async def test_a_project_cannot_read_another_projects_trace(tmp_path):
    async with running_gateway(str(tmp_path / "bc.db")) as harness:
        await harness.trace("private")
        _, other_secret = await harness.gateway.store.create_project(name="other", origins=["*"])
        response = await harness.client.get("/v1/traces/private", headers={"Authorization": f"Bearer {other_secret}"})
        assert response.status_code == 404


async def test_a_trace_body_without_content_length_is_refused_while_it_is_read(harness):
    from gateway.routes.traces import MAX_TRACE_BYTES

    sent = 0

    async def chunks():  # chunked transfer: no Content-Length to refuse it by
        nonlocal sent
        while sent < 3 * MAX_TRACE_BYTES:
            sent += 65536
            yield b" " * 65536

    response = await harness.client.post("/v1/traces", content=chunks(), headers={
        "Authorization": f"Bearer {harness.secret_key}", "Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["type"].endswith("too_large")
    assert "content-length" not in response.request.headers
    assert sent <= MAX_TRACE_BYTES + 65536  # the rest was never read
