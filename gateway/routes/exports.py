"""`GET /v1/exports/evals` and `GET /v1/exports/preferences?format=...`: datasets as `application/x-ndjson`, streamed
(secret key). Query: `since`, `until` (on the trace's `ts`: ISO 8601, ms or a duration like `7d`), `queue` (evals)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.core import gateway_of
from gateway.errors import HTTPProblem
from gateway.exports.formats import PREFERENCE_FORMATS
from gateway.exports.stream import eval_stream, preference_stream
from gateway.review.queues import parse_time
from gateway.routes.queues import authorize, now_ms

NDJSON = "application/x-ndjson"


def _time(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        return parse_time(int(value) if value.isdigit() else value, now_ms())
    except ValueError as exc:
        raise HTTPProblem("invalid_parameter", f"{name}: {exc}") from None


async def evals(request: Request) -> Response:
    caller = await authorize(request)
    gateway = gateway_of(request)
    queue_id = request.query_params.get("queue")
    if queue_id is not None and await gateway.store.review.queue_by_id(caller.project.id, queue_id) is None:
        raise HTTPProblem("not_found", "no such queue in this project")
    lines = eval_stream(gateway.store.review, caller.project.id, queue_id=queue_id, since=_time(request, "since"),
                        until=_time(request, "until"), min_votes=gateway.settings.outlier_min_votes)
    return StreamingResponse(lines, media_type=NDJSON)


async def preferences(request: Request) -> Response:
    caller = await authorize(request)
    format = request.query_params.get("format", "trl")
    if format not in PREFERENCE_FORMATS:
        raise HTTPProblem("invalid_parameter", f"format must be one of {', '.join(PREFERENCE_FORMATS)}")
    gateway = gateway_of(request)
    lines = preference_stream(gateway.store.review, caller.project.id, format, since=_time(request, "since"),
                              until=_time(request, "until"), min_votes=gateway.settings.outlier_min_votes)
    return StreamingResponse(lines, media_type=NDJSON)


routes = [
    Route("/v1/exports/evals", evals, methods=["GET"]),
    Route("/v1/exports/preferences", preferences, methods=["GET"]),
]
