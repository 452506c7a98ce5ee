"""Schemathesis against a live gateway: every operation in its own /openapi.json, schema-valid and schema-violating
requests, past authentication (a real project key, secret key, reviewer key and feedback token, a real queue with
items, a real destination). No 5xx, no answer that contradicts the document, no traceback in the log."""

from __future__ import annotations

import itertools
import json
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from tests.servers import METRICS_TOKEN, GatewayProcess

ORIGIN = "https://chat.example.com"
EXAMPLES = 50  # per operation, mode and key
TRACE, SESSION = "fuzz-trace", "fuzz-session"
REVIEWER = "fuzz-reviewer"
ENCRYPTION_KEY = "schemathesis-encryption-key-0123456789abcdef"
# Half of them down-voted and queued: more items than the label and skip operations take (one per example and key).
QUEUED_TRACES = 2 * 4 * EXAMPLES + 20
HOOK = "http://127.0.0.1:9/hook"  # nothing listens: a test send fails fast

# Schema-valid requests a route refuses by a rule JSON Schema cannot state: (operation, problem code, what the
# problem's detail starts with). A time given as free text that is not one, `to` not after `from`, a dimension named
# twice, an `after` that is not one of the trace's events, a URL that is not absolute http(s), metadata out of the
# bounds its description states (nesting depth, 64-bit integers, size).
REFUSALS_BEYOND_THE_SCHEMA = {
    ("GET /v1/stats", "invalid_parameter", ("from:", "to:", "group_by:")),
    ("GET /v1/exports/evals", "invalid_parameter", ("since:", "until:")),
    ("GET /v1/exports/preferences", "invalid_parameter", ("since:", "until:")),
    ("POST /v1/queues", "malformed", ("body is not valid: ",)),  # a filter's since/until that is not a time
    ("GET /v1/traces/{trace_id}", "invalid_parameter", ("`after` is not an event of this trace",)),
    ("POST /v1/traces", "malformed", ("metadata: ",)),
    ("POST /v1/destinations", "malformed", ("body is not a valid destination: url ",)),
}


@dataclass(frozen=True)
class Live:
    gateway: GatewayProcess
    keys: dict[str, str]
    reviewer_key: str
    token: str
    queue_id: str

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys['secret_key'] if key == 'secret' else self.reviewer_key}"}

    def destination(self) -> str:
        """A destination of the project (the fuzzer deletes them, and adds others)."""
        with httpx.Client(base_url=self.gateway.url, headers=self.auth("secret"), timeout=10) as client:
            listed = client.get("/v1/destinations").json()["destinations"]
            if listed:
                return listed[0]["id"]
            created = client.post("/v1/destinations", json={"kind": "webhook", "url": HOOK})
            assert created.status_code == 201, created.text
            return created.json()["id"]


def cli(db: Path, *args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "gateway", *args, "--db", str(db)], capture_output=True, text=True,
                         check=True, timeout=60)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    db = tmp_path_factory.mktemp("schemathesis") / "bc.db"
    keys = cli(db, "project", "create", "--name", "fuzz", "--origin", ORIGIN)
    reviewer_key = cli(db, "reviewer", "add", "--project", keys["public_key"], "--name", REVIEWER)["reviewer_key"]
    gateway = GatewayProcess(db, env={"BACKCHANNEL_ENCRYPTION_KEY": ENCRYPTION_KEY})
    gateway.start()
    secret = {"Authorization": f"Bearer {keys['secret_key']}"}
    try:
        with httpx.Client(base_url=gateway.url, headers=secret, timeout=10) as client:
            response = client.post("/v1/traces", json={"trace_id": TRACE, "session_id": SESSION})
            assert response.status_code == 201, response.text
            token = response.json()["feedback_token"]
            for i in range(QUEUED_TRACES):  # thumbs-down traces, a queue of them, and a pair for the exports
                trace = {"trace_id": f"t{i}", "session_id": f"s{i}", "input": "same prompt", "output": f"answer {i}",
                         "model": "m", "template": "answer"}
                assert client.post("/v1/traces", json=trace).status_code == 201
            events = [{"type": "feedback", "id": f"00000000-0000-4000-8000-{i:012d}", "trace_id": f"t{i}",
                       "session_id": f"s{i}", "ts": 1_790_000_000_000, "value": i % 2} for i in range(QUEUED_TRACES)]
            for start in range(0, len(events), 100):  # at most 100 a request
                assert client.post("/v1/events", json={"events": events[start:start + 100]}).status_code == 200
            queue = client.post("/v1/queues", json={"name": "fuzz", "filter": {"vote": "down"},
                                                    "sampling": {"size": QUEUED_TRACES, "random_share": 0}})
            assert queue.status_code == 201, queue.text
            assert client.post(f"/v1/queues/{queue.json()['id']}/fill").json()["added"] > 0
        yield Live(gateway, keys, reviewer_key, token, queue.json()["id"])
    finally:
        gateway.stop()
        gateway.log.close()


def event_validators(document: dict[str, Any], name: str) -> tuple[Any, Any]:
    """What the document says of one event, and of the batch `name` around the events (each is judged on its own)."""
    components = {"components": document["components"]}
    batch = document["components"]["schemas"][name]
    event = {**components, **batch["properties"]["events"]["items"]}
    envelope = {**components, **batch, "properties": {**batch["properties"], "events": {
        **batch["properties"]["events"], "items": {}}}}
    return (jsonschema_rs.validator_for(event, validate_formats=True),
            jsonschema_rs.validator_for(envelope, validate_formats=True))


def keys_for(operation: Any) -> list[str]:
    """Each key the operation's document allows, fuzzed in turn; [""] for an operation without a key."""
    schemes = {name for requirement in operation.definition.raw.get("security", []) for name in requirement}
    return [key for key, scheme in (("secret", "secretKey"), ("reviewer", "reviewerKey")) if scheme in schemes] or [""]


def supply(case: Any, live: Live, key: str, turn: int) -> None:
    """Make a schema-valid case reach past what no schema can say: real ids in the path (three times in four), the
    acting reviewer, labels of the taxonomy, each event's token or session, the project's own public key."""
    path, body = case.operation.path, case.body
    real = turn % 4 != 3
    params = case.path_parameters if case.path_parameters is not None else {}
    if real:
        for name, value in (("queue_id", live.queue_id), ("public_key", live.keys["public_key"]),
                            ("trace_id", TRACE)):
            if name in params:
                params[name] = value
        if "destination_id" in params:
            params["destination_id"] = live.destination()
        if path == "/v1/destinations" and isinstance(body, dict):
            body["url"] = HOOK
        if case.operation.method.upper() == "OPTIONS":  # the preflight of the project's own Origin
            case.query = {**(case.query or {}), "project": live.keys["public_key"]}
        if "item_id" in params:  # the item this reviewer holds now, if any
            claimed = httpx.post(f"{live.gateway.url}/v1/queues/{live.queue_id}/claim", json={"reviewer": REVIEWER},
                                 headers=live.auth("secret"), timeout=10)
            if claimed.status_code == 200:
                params["item_id"] = claimed.json()["item_id"]
    if isinstance(body, dict) and path.startswith("/v1/queues/"):
        if key == "secret":
            body["reviewer"] = REVIEWER
        else:
            body.pop("reviewer", None)
        if "labels" in body:  # the taxonomy now: the fuzzer's PUT /v1/projects/{pk}/labels changes it
            taxonomy = httpx.get(f"{live.gateway.url}/v1/projects/{live.keys['public_key']}/labels",
                                 headers=live.auth("secret"), timeout=10).json()["labels"]
            body["labels"] = [taxonomy[len(label) % len(taxonomy)] for label in body["labels"]]
            body.pop("preferred", None)  # the queue is a single one
    if path == "/v1/events" and isinstance(body, dict):
        server = "project" not in body
        if server:  # server-side ingest: the secret key is the authority
            case.headers["Authorization"] = live.auth("secret")["Authorization"]
        else:
            case.headers.pop("Authorization", None)
            body["project"] = live.keys["public_key"]
        for event in body.get("events", []):
            if isinstance(event, dict):
                event["trace_id"] = TRACE
                if server:
                    event.pop("token", None)
                    event["session_id"] = SESSION
                else:
                    event.update(token=live.token)
                    event.pop("session_id", None)


def test_the_live_gateway_agrees_with_its_openapi_document(live):
    gateway = live.gateway
    document = httpx.get(f"{gateway.url}/openapi.json", timeout=10).json()
    browser_event, browser_envelope = event_validators(document, "EventBatchDoc")
    server_event, server_envelope = event_validators(document, "ServerEventBatchDoc")
    line_validators = {path: jsonschema_rs.validator_for({"components": document["components"], **item["get"][
        "responses"]["200"]["content"]["application/x-ndjson"]["schema"]}, validate_formats=True)
        for path, item in document["paths"].items() if path.startswith("/v1/exports/")}

    @schemathesis.check
    def events_are_judged_one_by_one(ctx, response, case) -> bool | None:
        # A batch answers 200 with one result per event, and an event the document refuses is rejected, not stored;
        # a batch whose envelope the document refuses is refused whole.
        if case.operation.path != "/v1/events" or not isinstance(case.body, dict):
            return None
        server = "authorization" in {name.lower() for name in case.headers or {}}
        valid_event, valid_envelope = (server_event, server_envelope) if server else (browser_event, browser_envelope)
        if not valid_envelope.is_valid(case.body):
            assert 400 <= response.status_code < 500, f"invalid batch answered {response.status_code}"
            return True
        if response.status_code == 200:
            results = response.json()["results"]
            assert len(results) == len(case.body["events"])
            for event, result in zip(case.body["events"], results):
                if not valid_event.is_valid(event):
                    assert result["status"] == "rejected", f"an event the document refuses was {result['status']}"
        return True

    @schemathesis.check
    def every_exported_line_is_documented(ctx, response, case) -> bool | None:
        # Schemathesis does not read NDJSON: each line is held to the document here.
        validator = line_validators.get(case.operation.path)
        if validator is None or response.status_code != 200:
            return None
        assert response.headers["content-type"][0].startswith("application/x-ndjson")
        for line in response.content.splitlines():
            errors = [error.message for error in validator.iter_errors(json.loads(line))]
            assert not errors, f"an exported line the document does not describe: {errors}"
        return True

    def beyond_the_schema(case, response) -> bool:
        if not response.headers.get("content-type", [""])[0].startswith("application/problem+json"):
            return False
        problem = response.json()
        return any(label == case.operation.label and problem["type"].endswith(f":{code}")
                   and problem["detail"].startswith(prefixes) for label, code, prefixes in REFUSALS_BEYOND_THE_SCHEMA)

    config = schemathesis.Config.from_dict({
        "auth": {"openapi": {"secretKey": {"bearer": live.keys["secret_key"]}, "metricsToken": {"bearer": METRICS_TOKEN}}},
        # A string over its maxLength, JSON-escaped, can be a body over the route's byte limit: refused with 413
        # (`too_large`, documented), which schemathesis does not count as a rejection unless told.
        "checks": {"negative_data_rejection": {"expected-statuses": [
            "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]}}})
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json", config=config)
    failures: dict[tuple[str, str, str, str], str] = {}
    exercised: dict[str, set[int]] = {}

    def fuzz(operation, mode: GenerationMode, key: str) -> None:
        events = operation.path == "/v1/events"
        turns = itertools.count()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def run(case):
            case.headers = {**(case.headers or {}), "Origin": ORIGIN}
            if key == "reviewer":  # the secret key comes from `config`; in the negative mode, so may a bad one
                case.headers.update(live.auth(key))
            if mode is GenerationMode.POSITIVE:
                supply(case, live, key, next(turns))
            response = None
            try:
                response = case.call(base_url=gateway.url)
                exercised.setdefault(operation.label, set()).add(response.status_code)
                excluded = [negative_data_rejection] if events else []
                if response.status_code == 400 and beyond_the_schema(case, response):
                    excluded.append(positive_data_acceptance)
                case.validate_response(response, additional_checks=[events_are_judged_one_by_one,
                                                                    every_exported_line_is_documented],
                                       excluded_checks=excluded)
            except (AssertionError, FailureGroup) as exc:
                for failure in exc.exceptions if isinstance(exc, FailureGroup) else [exc]:
                    title = str(failure).split("\n", 1)[0]
                    answer = f"{response.status_code} {response.text[:500]}" if response is not None else ""
                    failures.setdefault((operation.label, mode.name, key, title),
                                        f"{failure}\n{case.as_curl_command()}\n-> {answer}"[:3000])

        try:
            run()
        except Unsatisfiable:  # nothing to violate: an operation without parameters or body
            assert mode is GenerationMode.NEGATIVE

    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        keys = keys_for(operation)
        for key in keys:
            fuzz(operation, GenerationMode.POSITIVE, key)
        fuzz(operation, GenerationMode.NEGATIVE, keys[0])  # what is refused before any key is looked at

    log = Path(gateway.log.name).read_text()
    assert not failures, "\n\n".join(f"{key}:\n{text}" for key, text in failures.items())
    assert "Traceback" not in log, log[-5000:]
    # The fuzzer got past authentication: valid events were stored, items claimed, labeled and skipped, and every
    # operation answered something other than a refusal at least once.
    with sqlite3.connect(gateway.db) as db:
        assert db.execute("SELECT count(*) FROM events").fetchone()[0] > QUEUED_TRACES
    unreached = {operation.label: exercised[operation.label] for operation in operations
                 if not any(status < 300 for status in exercised[operation.label])}
    assert unreached == {}
