"""The `accepted` event (the answer was used: "Use this", "Insert", "Apply"): its schema, its storage, its signal."""

from __future__ import annotations

import time
import uuid

from gateway.openapi import openapi_document


def accepted(token: str, how: str) -> dict:
    return {"id": str(uuid.uuid4()), "type": "accepted", "trace_id": "trace-1", "token": token,
            "ts": int(time.time() * 1000), "how": how}


async def test_accepted_is_stored_with_how_and_counted_in_signals(harness):
    token = await harness.trace()
    r = await harness.send(accepted(token, "accept"), accepted(token, "insert"), accepted(token, "apply"),
                           {**accepted(token, "accept"), "text": "the answer"})
    assert [(x["status"], x.get("error")) for x in r.json()["results"]] == [
        ("accepted", None), ("accepted", None), ("rejected", "invalid_event"), ("rejected", "invalid_event")]
    stored = await harness.stored()
    assert [(e["type"], e["how"]) for e in stored["events"]] == [("accepted", "accept"), ("accepted", "insert")]
    assert stored["signals"] == {"accepted": 1}  # sessions that sent it


def test_openapi_documents_accepted():
    schemas = openapi_document()["components"]["schemas"]
    assert schemas["Accepted"]["properties"]["how"]["enum"] == ["accept", "insert"]
