"""PostHog: each vote and opted-in signal becomes one event, sent in batches to `POST {url}/batch/`.

`uuid` is the Backchannel event id (PostHog de-duplicates on it), `distinct_id` the trace's `user_id`, or else the
session id (then the event is sent without a person profile, as PostHog's docs advise for anonymous events). The vote's
comment is NOT sent, only `has_comment`: analytics events are broadly visible and kept long, and a count needs no text;
Langfuse and webhooks get the (scrubbed) comment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from gateway.forwarding import DEFAULT_SIGNALS, Destination, OutboxRecord, PostHogKey, Request, iso_ms

EVENT_NAMES: dict[str, str] = {
    "feedback": "llm_feedback",
    "copied": "llm_response_copied",
    "edited": "llm_response_edited",
    "regenerated": "llm_response_regenerated",
    "rephrased": "llm_prompt_rephrased",
    "abandoned": "llm_session_abandoned",
    "accepted": "llm_response_accepted",
}
_encode = msgspec.json.Encoder().encode


def event(record: OutboxRecord) -> dict[str, Any]:
    """One entry of the batch."""
    properties: dict[str, Any] = {"$ai_trace_id": record.trace_id, "$ai_session_id": record.session_id,
                                  "backchannel_project": record.project}
    if record.model is not None:
        properties["model"] = record.model
    if record.template is not None:
        properties["template"] = record.template
    if record.type == "feedback":
        properties["value"] = record.value
        properties["has_comment"] = bool(record.comment)
        if record.reason is not None:
            properties["reason"] = record.reason
    properties.update((k, v) for k, v in record.props.items() if v is not None)
    if record.user_id is None:
        properties["$process_person_profile"] = False
    return {"event": EVENT_NAMES[record.type], "distinct_id": record.user_id or record.session_id,
            "timestamp": iso_ms(record.ts), "uuid": record.event_id, "properties": properties}


class PostHog(Destination):
    kind = "posthog"
    max_batch = 500  # events per request: far below PostHog's 20 MB limit, as ours are a few hundred bytes each
    round_size = 1000  # two requests a round

    def __init__(self, url: str, key: PostHogKey, signals: frozenset[str] = DEFAULT_SIGNALS) -> None:
        super().__init__(url, signals)
        self._api_key = key.api_key

    def requests(self, records: Sequence[OutboxRecord], now: float) -> list[Request]:
        wanted = [r for r in records if r.type in self.signals]
        return [Request(f"{self.url}/batch/",
                        _encode({"api_key": self._api_key, "batch": [event(r) for r in chunk]}),
                        tuple(r.event_id for r in chunk), {"Content-Type": "application/json"})
                for chunk in (wanted[i:i + self.max_batch] for i in range(0, len(wanted), self.max_batch))]
