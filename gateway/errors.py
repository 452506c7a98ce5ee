"""Error codes: one place maps each to its HTTP status and RFC 9457 problem+json body.

Whole-request errors answer with `application/problem+json`; per-event errors appear as `error` in that event's result
(their status column is None).
"""

from __future__ import annotations

import msgspec
from starlette.responses import Response

from gateway.schemas import Problem

# code: (HTTP status or None for per-event codes, title)
ERRORS: dict[str, tuple[int | None, str]] = {
    # whole request
    "malformed": (400, "Malformed request body"),
    "invalid_parameter": (400, "Invalid query parameter"),
    "unknown_label": (400, "Label not in the project's taxonomy"),
    "unauthorized": (401, "Missing or unknown key"),
    "unknown_project": (401, "Unknown project key"),
    "origin_not_allowed": (403, "Origin not allowed for this project"),
    "forbidden": (403, "Not allowed with this key"),
    "not_found": (404, "Not found"),
    "method_not_allowed": (405, "Method not allowed"),
    "request_timeout": (408, "Request not received in time"),
    "not_lease_holder": (409, "Another reviewer holds this item, or none was claimed"),
    "lease_expired": (410, "The lease expired and another reviewer took the item"),
    "too_large": (413, "Request body too large"),
    "unsupported_media_type": (415, "Unsupported content type or encoding"),
    "rate_limited": (429, "Too many events"),
    "store_unavailable": (503, "Store cannot commit right now"),
    "not_configured": (503, "A server setting this needs is missing"),
    "limit_reached": (409, "A limit on how many of these a project may have was reached"),
    # one event
    "invalid_event": (None, "Event does not match its schema"),
    "unknown_type": (None, "Unknown event type"),
    "event_too_large": (None, "Event larger than 32 KiB"),
    "invalid_token": (None, "Feedback token missing, expired, or not for this trace, session or project"),
    "missing_session": (None, "Event without a token must carry session_id"),
    "unknown_trace": (None, "No such trace in this project"),
    "invalid_reason": (None, "Reason is not one of the project's reasons"),
}

_encoder = msgspec.json.Encoder()


class HTTPProblem(Exception):
    """Raise to answer the whole request with a problem+json body."""

    def __init__(self, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        status, _ = ERRORS[code]
        assert status is not None, f"{code} is a per-event code"
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.headers = headers or {}


def problem_type(code: str) -> str:
    return f"urn:backchannel:problem:{code}"


# A detail may quote the client's input (msgspec names an unknown field whole): never more than this of it.
MAX_DETAIL_CHARS = 300


def problem_body(code: str, detail: str) -> tuple[int, bytes]:
    """The HTTP status and problem+json body for a whole-request error."""
    status, title = ERRORS[code]
    assert status is not None, f"{code} is a per-event code"
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[:MAX_DETAIL_CHARS] + "…"
    return status, _encoder.encode(Problem(type=problem_type(code), title=title, status=status, detail=detail))


def problem_response(code: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    status, body = problem_body(code, detail)
    return Response(body, status_code=status, media_type="application/problem+json", headers=headers)
