"""Langfuse: each vote and opted-in signal becomes a score on the Langfuse trace with the same id.

`POST {url}/api/public/scores` (CreateScoreRequest in Langfuse's public API), HTTP Basic with the project's public and
secret key. That endpoint takes one score per request and upserts on `id`, so a score's id is derived from what it
describes, not from the event: every vote of one session on one trace writes the same score (a changed vote, or a
comment that follows it, overwrites it). The batched `/api/public/ingestion` endpoint is not used: it answers 207 with
per-event errors and processes scores later, so a refused score would look delivered.

The reason goes in the vote's `metadata`, not in a second `user-feedback-reason` score: a second score would outlive a
vote changed to "up" (no reason), and removing it would take a DELETE that can itself fail.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec

from gateway.forwarding import DEFAULT_SIGNALS, Destination, LangfuseKeys, OutboxRecord, Request

VOTE_SCORE = "user-feedback"
_NAMESPACE = uuid.UUID("5b0f3c1e-8a9d-4c2b-9e57-0d6a1f3b7c42")  # ours: score ids are UUIDv5 in it
_encode = msgspec.json.Encoder().encode


def score_id(project: str, trace_id: str, session_id: str, name: str) -> str:
    """The stable id of the score `name` that one session gives one trace (JSON-encoded so no two tuples collide)."""
    return str(uuid.uuid5(_NAMESPACE, _encode([project, trace_id, session_id, name]).decode()))


def score(record: OutboxRecord) -> dict[str, Any]:
    """The CreateScoreRequest body for one record."""
    metadata: dict[str, Any] = {"source": "backchannel", "session_id": record.session_id, "event_id": record.event_id}
    metadata.update((k, v) for k, v in record.props.items() if v is not None)
    if record.type == "feedback":
        name = VOTE_SCORE
        if record.reason is not None:
            metadata["reason"] = record.reason
        body: dict[str, Any] = {"value": record.value, "dataType": "BOOLEAN"}
        if record.comment:
            body["comment"] = record.comment
    else:  # an implicit signal: it happened (1); its measurements ride in metadata
        name = record.type
        body = {"value": 1, "dataType": "BOOLEAN"}
    return {"id": score_id(record.project, record.trace_id, record.session_id, name), "traceId": record.trace_id,
            "name": name, **body, "metadata": metadata}


class Langfuse(Destination):
    kind = "langfuse"

    def __init__(self, url: str, keys: LangfuseKeys, signals: frozenset[str] = DEFAULT_SIGNALS) -> None:
        super().__init__(url, signals)
        basic = base64.b64encode(f"{keys.public_key}:{keys.secret_key}".encode()).decode()
        self._headers = {"Authorization": f"Basic {basic}", "Content-Type": "application/json"}

    def requests(self, records: Sequence[OutboxRecord], now: float) -> list[Request]:
        return [Request(f"{self.url}/api/public/scores", _encode(score(r)), (r.event_id,), self._headers, r.trace_id)
                for r in records if r.type in self.signals and not r.superseded]
