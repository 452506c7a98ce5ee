"""Schemathesis against a live gateway: every operation in its own /openapi.json, schema-valid and schema-violating
requests, past authentication (a real project key, secret key and feedback token). No 5xx, no answer that contradicts
the document, no traceback in the log."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
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
from schemathesis.specs.openapi.checks import negative_data_rejection

from tests.servers import GatewayProcess

ORIGIN = "https://chat.example.com"
EXAMPLES = 50  # per operation and mode: ~40 s on a 2-core machine
TRACE, SESSION = "fuzz-trace", "fuzz-session"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    db = tmp_path_factory.mktemp("schemathesis") / "bc.db"
    created = subprocess.run([sys.executable, "-m", "gateway", "project", "create", "--name", "fuzz", "--origin", ORIGIN,
                              "--db", str(db)], capture_output=True, text=True, check=True, timeout=60)
    keys = json.loads(created.stdout)
    gateway = GatewayProcess(db)
    gateway.start()
    try:
        response = httpx.post(f"{gateway.url}/v1/traces", json={"trace_id": TRACE, "session_id": SESSION},
                              headers={"Authorization": f"Bearer {keys['secret_key']}"}, timeout=10)
        assert response.status_code == 201, response.text
        yield gateway, keys, response.json()["feedback_token"]
    finally:
        gateway.stop()
        gateway.log.close()


def event_validators(document: dict[str, Any]) -> tuple[Any, Any]:
    """What the document says of one event, and of the batch around the events (each event is judged on its own)."""
    components = {"components": document["components"]}
    batch = document["components"]["schemas"]["EventBatchDoc"]
    event = {**components, **batch["properties"]["events"]["items"]}
    envelope = {**components, **batch, "properties": {**batch["properties"], "events": {
        **batch["properties"]["events"], "items": {}}}}
    return (jsonschema_rs.validator_for(event, validate_formats=True),
            jsonschema_rs.validator_for(envelope, validate_formats=True))


def test_the_live_gateway_agrees_with_its_openapi_document(live):
    gateway, keys, token = live
    document = httpx.get(f"{gateway.url}/openapi.json", timeout=10).json()
    valid_event, valid_envelope = event_validators(document)

    @schemathesis.check
    def events_are_judged_one_by_one(ctx, response, case) -> bool | None:
        # A batch answers 200 with one result per event, and an event the document refuses is rejected, not stored;
        # a batch whose envelope the document refuses is refused whole.
        if case.operation.path != "/v1/events" or not isinstance(case.body, dict):
            return None
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

    config = schemathesis.Config.from_dict({"auth": {"openapi": {"secretKey": {"bearer": keys["secret_key"]}}}})
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json", config=config)
    failures: dict[tuple[str, str, str], str] = {}

    def fuzz(operation, mode: GenerationMode) -> None:
        events = operation.path == "/v1/events"

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def run(case):
            case.headers = {**(case.headers or {}), "Origin": ORIGIN}
            if events and mode is GenerationMode.POSITIVE and isinstance(case.body, dict):
                # Past authentication: the real project, and each event's token for the logged trace.
                case.body["project"] = keys["public_key"]
                for event in case.body.get("events", []):
                    if isinstance(event, dict):
                        event.update(token=token, trace_id=TRACE)
                        event.pop("session_id", None)
            try:
                case.call_and_validate(base_url=gateway.url, additional_checks=[events_are_judged_one_by_one],
                                       excluded_checks=[negative_data_rejection] if events else [])
            except (AssertionError, FailureGroup) as exc:
                for failure in exc.exceptions if isinstance(exc, FailureGroup) else [exc]:
                    title = str(failure).split("\n", 1)[0]
                    failures.setdefault((operation.label, mode.name, title),
                                        f"{failure}\n{case.as_curl_command()}"[:3000])

        try:
            run()
        except Unsatisfiable:  # nothing to violate: an operation without parameters or body
            assert mode is GenerationMode.NEGATIVE

    for result in schema.get_all_operations():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(result.ok(), mode)

    with sqlite3.connect(gateway.db) as db:  # the fuzzer got past authentication: its valid events were stored
        assert db.execute("SELECT count(*) FROM events").fetchone()[0] > 0
    log = Path(gateway.log.name).read_text()
    assert not failures, "\n\n".join(f"{key}:\n{text}" for key, text in failures.items())
    assert "Traceback" not in log, log[-5000:]
