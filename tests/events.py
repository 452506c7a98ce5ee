"""Builders for browser events."""

from __future__ import annotations

import time
import uuid


def event(type: str = "shown", *, trace_id: str = "trace-1", token: str | None = None, **fields) -> dict:
    body = {"id": str(uuid.uuid4()), "type": type, "trace_id": trace_id, "ts": int(time.time() * 1000)}
    if token is not None:
        body["token"] = token
    body.update(fields)
    return body


def feedback(value: int, **fields) -> dict:
    return event("feedback", value=value, **fields)
