"""Each route's answers, in the states that shape them (single and pairwise queues, agreement or none, the judge's
suggestion, NDJSON exports), hold to /openapi.json; and regressions for what the schemathesis run found."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema_rs

from gateway.openapi import openapi_document
from tests.conftest import Harness, running_gateway
from tests.test_queues import auth, claim, fill, label, make_queue, reviewer, vote


def check(response: httpx.Response, path: str, method: str = "get") -> Any:
    """The answer's JSON after holding it to what the document says of `path` and this status (each line of NDJSON)."""
    documented = openapi_document()["paths"][path][method]["responses"][str(response.status_code)]
    media_type = response.headers["content-type"].split(";")[0]
    schema = documented["content"][media_type]["schema"]
    validator = jsonschema_rs.validator_for({"components": openapi_document()["components"], **schema},
                                            validate_formats=True)
    values = ([json.loads(line) for line in response.content.splitlines()] if media_type == "application/x-ndjson"
              else [response.json()])
    for value in values:
        errors = [f"{error.instance_path}: {error.message}" for error in validator.iter_errors(value)]
        assert errors == [], (path, method, response.status_code, value)
    return values if media_type == "application/x-ndjson" else values[0]


async def test_queue_claim_label_and_export_answers_are_documented(tmp_path):
    async with running_gateway(str(tmp_path / "bc.db"), judge="gateway.review.judge:hallucinated_link") as h:
        secret = auth(h.secret_key)
        for i in range(3):
            await h.trace(f"t{i}", f"s{i}", input="Where are the docs?", output=f"See https://x.example/{i}.")
            await vote(h, f"t{i}", f"s{i}", 0, reason="wrong_information")
        single = check(await h.client.post("/v1/queues", json={"name": "s", "reviewers_per_item": 2, "sampling": {
            "random_share": 0}}, headers=secret), "/v1/queues", "post")
        assert "preferred" not in single["agreement"]  # a single queue's agreement has no side to agree on
        check(await h.client.post(f"/v1/queues/{single['id']}/fill", headers=secret), "/v1/queues/{queue_id}/fill",
              "post")
        ann, bob = await reviewer(h, "ann"), await reviewer(h, "bob")
        for key in (ann, bob):
            claimed = check(await claim(h, single["id"], key), "/v1/queues/{queue_id}/claim", "post")
            assert claimed["trace"]["judge"] == {"labels": ["hallucinated_link"], "confidence": 0.6}
            assert "a" not in claimed and "b" not in claimed
            check(await label(h, single["id"], claimed["item_id"], key, labels=["hallucinated_link"]),
                  "/v1/queues/{queue_id}/items/{item_id}/label", "post")
        state = check(await h.client.get(f"/v1/queues/{single['id']}", headers=secret), "/v1/queues/{queue_id}")
        assert state["agreement"]["labels"]["hallucinated_link"]["items"] == 1
        check(await h.client.get("/v1/queues", headers=secret), "/v1/queues")
        skipped = check(await h.client.post(f"/v1/queues/{single['id']}/items/"
                                            f"{(await claim(h, single['id'], ann)).json()['item_id']}/skip",
                                            headers=auth(ann)), "/v1/queues/{queue_id}/items/{item_id}/skip", "post")
        assert skipped["status"] == "skipped"
        lines = check(await h.client.get("/v1/exports/evals", headers=secret), "/v1/exports/evals")
        assert [line["labels"] for line in lines] == [["hallucinated_link"]]
        for format in ("trl", "trl_unpaired", "openai"):
            check(await h.client.get(f"/v1/exports/preferences?format={format}", headers=secret),
                  "/v1/exports/preferences")


async def test_a_pairwise_claim_and_its_queue_are_documented(harness: Harness):
    await harness.trace("p1", input="Name a colour", output="Red")
    await harness.trace("p2", input="Name a colour", output="Blue", parent_trace_id="p1")
    queue = await make_queue(harness, kind="pairwise", sampling={"size": 10, "random_share": 0})
    await fill(harness, queue["id"])
    claimed = check(await claim(harness, queue["id"], await reviewer(harness, "ann")), "/v1/queues/{queue_id}/claim",
                    "post")
    assert "trace" not in claimed and claimed["a"]["judge"] is None and claimed["b"]["judge"] is None
    state = check(await harness.client.get(f"/v1/queues/{queue['id']}", headers=auth(harness.secret_key)),
                  "/v1/queues/{queue_id}")
    assert state["agreement"]["preferred"] is None  # pairwise: present, and null while no item has two reviewers


async def test_labels_stats_alerts_ops_and_traces_answers_are_documented(harness: Harness):
    secret = auth(harness.secret_key)
    labels = f"/v1/projects/{harness.public_key}/labels"
    assert check(await harness.client.put(labels, json={"labels": ["a", "b", "a"]}, headers=secret),
                 "/v1/projects/{public_key}/labels", "put") == {"labels": ["a", "b"]}
    check(await harness.client.get(labels, headers=secret), "/v1/projects/{public_key}/labels")
    await harness.trace("t", "s", model="m")
    await vote(harness, "t", "s", 1)
    stats = check(await harness.client.get("/v1/stats?group_by=model", headers=secret), "/v1/stats")
    assert stats["groups"][0]["key"] == {"model": "m"}
    assert check(await harness.client.get("/v1/alerts?state=all", headers=secret), "/v1/alerts") == {"alerts": []}
    check(await harness.client.get("/v1/traces/t", headers=secret), "/v1/traces/{trace_id}")
    assert check(await harness.client.get("/healthz"), "/healthz") == {"status": "ok"}
    assert check(await harness.client.get("/readyz"), "/readyz") == {"status": "ready", "checks": {"store": True}}
    for url, path, status, code in (("/v1/stats?group_by=day,day", "/v1/stats", 400, "invalid_parameter"),
                                    ("/v1/alerts?state=x", "/v1/alerts", 400, "invalid_parameter"),
                                    ("/v1/queues/q_x", "/v1/queues/{queue_id}", 404, "not_found")):
        response = await harness.client.get(url, headers=secret)
        assert response.status_code == status
        assert check(response, path)["type"] == f"urn:backchannel:problem:{code}"


# --- What the schemathesis run found ---

async def test_an_export_time_of_any_length_is_documented_as_the_route_takes_it(harness: Harness):
    # The document said `since` was at most 40 characters; the route takes any ms count (here 41 digits of 0).
    since = next(p for p in openapi_document()["paths"]["/v1/exports/evals"]["get"]["parameters"]
                 if p["name"] == "since")
    assert "maxLength" not in since["schema"]
    response = await harness.client.get("/v1/exports/evals?since=" + "0" * 41, headers=auth(harness.secret_key))
    assert response.status_code == 200


async def test_trace_metadata_bounds_are_stated_in_the_document(harness: Harness):
    # A schema-valid trace whose metadata holds an integer beyond 64 bits is refused: the document must say so.
    description = openapi_document()["components"]["schemas"]["TraceIn"]["properties"]["metadata"]["anyOf"][0][
        "description"]
    assert "64 bits" in description and "nested at most" in description
    response = await harness.client.post("/v1/traces", json={"trace_id": "t", "session_id": "s",
                                                             "metadata": {"n": 2**64}},
                                         headers=auth(harness.secret_key))
    assert response.status_code == 400 and response.json()["detail"].startswith("metadata: ")
