"""Every number a client sends has its real range, in the Structs and so in the OpenAPI document."""

from __future__ import annotations

import time
import uuid

import msgspec
import pytest

from gateway.openapi import openapi_document
from gateway.schemas import Event, TraceIn

decode_event = msgspec.json.Decoder(Event).decode
decode_trace = msgspec.json.Decoder(TraceIn).decode

DAY_MS = 86_400_000
BEFORE_2100 = 4_102_444_799_999


def event(type: str, **fields) -> bytes:
    return msgspec.json.encode({"id": str(uuid.uuid4()), "type": type, "trace_id": "t", "ts": 1_764_460_800_000,
                                **fields})


# (event type, field, lowest valid, highest valid)
RANGES = [
    ("shown", "ts", 0, BEFORE_2100),
    ("shown", "dwell_ms", 0, 30 * DAY_MS),
    ("copied", "length", 0, 1_000_000),
    ("regenerated", "attempt", 1, 10_000),
    ("edited", "edit_ratio", 0.0, 1.0),
    ("rephrased", "similarity", 0.0, 1.0),
]
REQUIRED = {"copied": {"length": 1}, "regenerated": {"attempt": 1}, "edited": {"edit_ratio": 0.5},
            "rephrased": {"similarity": 0.5}}


@pytest.mark.parametrize("type, field, low, high", RANGES)
def test_each_event_number_has_its_range(type, field, low, high):
    def decoded(value):
        return decode_event(event(type, **{**REQUIRED.get(type, {}), field: value}))

    assert getattr(decoded(low), field) == low and getattr(decoded(high), field) == high
    step = 1 if isinstance(low, int) else 1e-9
    for bad in (low - step, high + step, 10**300, -(10**300), 1e308, "1", True, [1]):
        with pytest.raises(msgspec.ValidationError):
            decoded(bad)


@pytest.mark.parametrize("type, field", [(t, f) for t, f, low, _ in RANGES if isinstance(low, int) and f != "ts"])
def test_whole_numbers_may_be_written_with_a_point_and_are_kept_as_ints(type, field):
    assert getattr(decode_event(event(type, **{**REQUIRED.get(type, {}), field: 7.0})), field) == 7
    with pytest.raises(msgspec.ValidationError):
        decode_event(event(type, **{**REQUIRED.get(type, {}), field: 7.5}))


async def test_whole_numbers_written_with_a_point_are_stored_as_ints(harness):
    token = await harness.trace()
    ts = float(int(time.time() * 1000))
    batch = [{"id": str(uuid.uuid4()), "type": "copied", "trace_id": "trace-1", "token": token, "ts": ts,
              "length": 7.0, "dwell_ms": 1200.0},
             {"id": str(uuid.uuid4()), "type": "regenerated", "trace_id": "trace-1", "token": token, "ts": ts,
              "attempt": 2.0}]
    response = await harness.send(*batch)
    assert [r["status"] for r in response.json()["results"]] == ["accepted", "accepted"]
    raw = (await harness.client.get("/v1/traces/trace-1",
                                    headers={"Authorization": f"Bearer {harness.secret_key}"})).content
    assert b".0" not in raw  # every number stored and answered as the whole number it is
    stored = {e["type"]: e for e in msgspec.json.decode(raw)["events"]}
    assert (stored["copied"]["length"], stored["copied"]["dwell_ms"], stored["regenerated"]["attempt"]) == (7, 1200, 2)
    assert stored["copied"]["ts"] == int(ts)


def test_trace_ts_has_the_same_range():
    trace = decode_trace(b'{"trace_id": "t", "session_id": "s", "ts": 23737.0}')
    assert trace.ts == 23737 and isinstance(trace.ts, int)
    for bad in (-1, BEFORE_2100 + 1, 23737.5, 10**300):
        with pytest.raises(msgspec.ValidationError):
            decode_trace(msgspec.json.encode({"trace_id": "t", "session_id": "s", "ts": bad}))


def numbers_without_range(schema: object, path: str = "") -> list[str]:
    """Every integer or number in a JSON Schema that lacks a minimum or a maximum."""
    found = []
    if isinstance(schema, dict):
        if schema.get("type") in ("integer", "number") and not ({"minimum", "maximum"} <= schema.keys()):
            found.append(path)
        for key, child in schema.items():
            found += numbers_without_range(child, f"{path}/{key}")
    elif isinstance(schema, list):
        for i, child in enumerate(schema):
            found += numbers_without_range(child, f"{path}/{i}")
    return found


def test_every_number_a_client_sends_has_a_range_in_the_openapi_document():
    schemas = openapi_document()["components"]["schemas"]
    inputs = [name for name in schemas if name in {"EventBatchDoc", "TraceIn"} or name in {
        cls.__name__ for cls in Event.__args__}]
    assert {"EventBatchDoc", "TraceIn", "Copied", "Regenerated"} <= set(inputs)
    assert [path for name in inputs for path in numbers_without_range(schemas[name], name)] == []


def test_the_event_batch_document_refuses_what_the_gateway_refuses():
    batch = openapi_document()["components"]["schemas"]["EventBatchDoc"]
    assert batch["additionalProperties"] is False
    assert batch["properties"]["project"]["maxLength"] == 64
    assert batch["properties"]["events"]["maxItems"] == 100
