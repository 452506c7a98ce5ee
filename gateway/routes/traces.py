"""Server routes for traces: `POST /v1/traces` (log a generation, get its feedback token), `GET /v1/traces/{id}`."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from gateway import bounds, tokens
from gateway.body import read_body
from gateway.core import gateway_of
from gateway.errors import HTTPProblem
from gateway.schemas import TraceCreated, TraceIn

_decode_trace = msgspec.json.Decoder(TraceIn).decode
_encode = msgspec.json.Encoder().encode
MAX_TRACE_BYTES = 2 * 1024 * 1024


async def post_trace(request: Request) -> Response:
    gateway = gateway_of(request)
    project, secret = await gateway.directory.server_auth(request)
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise HTTPProblem("unsupported_media_type", "send the trace as application/json")
    body = await read_body(request.receive, dict(request.scope["headers"]), MAX_TRACE_BYTES)
    if bounds.nesting_exceeds(body):
        raise HTTPProblem("malformed", f"body nests deeper than {bounds.MAX_BODY_DEPTH} levels")
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
    return Response(_encode(body), status_code=201 if created else 200, media_type="application/json")


async def get_trace(request: Request) -> Response:
    gateway = gateway_of(request)
    project, _ = await gateway.directory.server_auth(request)
    trace = await gateway.store.get_trace(project.id, request.path_params["trace_id"])
    if trace is None:
        raise HTTPProblem("not_found", "no such trace in this project")
    return Response(_encode(trace), media_type="application/json")
