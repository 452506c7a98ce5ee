"""Server routes for traces: `POST /v1/traces` (log a generation, get its feedback token), `GET /v1/traces/{id}`."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from gateway import bounds, tokens
from gateway.body import read_json
from gateway.core import gateway_of
from gateway.errors import HTTPProblem
from gateway.routes import json_response
from gateway.routes import queues
from gateway.schemas import DEFAULT_EVENTS_PAGE, MAX_EVENTS_PAGE, TraceCreated, TraceIn

_decode_trace = msgspec.json.Decoder(TraceIn).decode
MAX_TRACE_BYTES = 2 * 1024 * 1024


async def post_trace(request: Request) -> Response:
    gateway = gateway_of(request)
    project, secret = await gateway.directory.server_auth(request)
    body = await read_json(request, MAX_TRACE_BYTES)
    try:
        trace = _decode_trace(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise HTTPProblem("malformed", f"body is not a valid trace: {exc}") from None
    if trace.metadata is not None and (problem := bounds.check_json(trace.metadata)) is not None:
        raise HTTPProblem("malformed", f"metadata: {problem}")
    created = await gateway.store.upsert_trace(project.id, trace)
    token, expires_at = tokens.mint(secret, public_key=project.public_key, trace_id=trace.trace_id,
                                    session_id=trace.session_id, ttl=gateway.settings.token_ttl)
    body = TraceCreated(trace_id=trace.trace_id, session_id=trace.session_id, feedback_token=token,
                        expires_at=expires_at)
    return json_response(body, 201 if created else 200)


async def get_trace(request: Request) -> Response:
    gateway = gateway_of(request)
    project = await queues.trace_reader(request, request.path_params["trace_id"])
    limit, after = _page(request)
    try:
        trace = await gateway.store.get_trace(project.id, request.path_params["trace_id"], after=after, limit=limit)
    except ValueError as exc:
        raise HTTPProblem("invalid_parameter", str(exc)) from None
    if trace is None:
        raise HTTPProblem("not_found", "no such trace in this project")
    return json_response(trace)


def _page(request: Request) -> tuple[int, str | None]:
    """`?limit=` (1 to MAX_EVENTS_PAGE, default DEFAULT_EVENTS_PAGE) and `?after=` (an event id), each at most once."""
    params = request.query_params
    for name in ("limit", "after"):
        if len(params.getlist(name)) > 1:
            raise HTTPProblem("invalid_parameter", f"`{name}` appears more than once")
    text = params.get("limit")
    if text is None:
        return DEFAULT_EVENTS_PAGE, params.get("after")
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_EVENTS_PAGE):
        raise HTTPProblem("invalid_parameter", f"`limit` must be a whole number from 1 to {MAX_EVENTS_PAGE}")
    return int(text), params.get("after")
