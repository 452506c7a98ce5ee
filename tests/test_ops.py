from __future__ import annotations

import typing

from gateway.schemas import Event


async def test_health_and_readiness(harness):
    assert (await harness.client.get("/healthz")).json() == {"status": "ok"}
    ready = await harness.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"store": True}


async def test_project_config_is_public_and_lists_reasons(harness):
    response = await harness.client.get(f"/v1/projects/{harness.public_key}/config")
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    config = response.json()
    assert [r["code"] for r in config["reasons"]] == ["wrong_information", "too_long", "didnt_follow_instructions",
                                                      "offensive_or_unsafe", "other"]
    assert config["delay_ms"] == 2000 and config["labels"]["up"] == "Good response"
    assert harness.secret_key not in response.text
    assert (await harness.client.get("/v1/projects/pk_nope/config")).status_code == 404


async def test_openapi_is_generated_from_the_schemas(harness):
    doc = (await harness.client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert {"/v1/events", "/v1/traces", "/v1/traces/{trace_id}", "/v1/projects/{public_key}/config"} <= set(doc["paths"])
    schemas = doc["components"]["schemas"]
    for name in ("Feedback", "Copied", "TraceIn", "EventResults"):
        assert name in schemas
    assert schemas["Copied"]["properties"]["type"]["enum"] == ["copied"]
    assert "429" in doc["paths"]["/v1/events"]["post"]["responses"]
    assert {cls.__name__ for cls in typing.get_args(Event)} <= set(schemas)  # every event type is documented


async def test_unknown_route_and_method_are_problem_json(harness):
    missing = await harness.client.get("/v1/nothing")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    wrong = await harness.client.get("/v1/events")
    assert wrong.status_code == 405 and wrong.headers["content-type"] == "application/problem+json"
