"""`POST /v1/events`: the browser's door. Authenticate, validate, rate-limit, de-duplicate, commit, then answer."""

from __future__ import annotations

import asyncio
import hashlib
import math
import zlib
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from gateway import tokens
from gateway.errors import HTTPProblem
from gateway.ratelimit import Limit
from gateway.schemas import (
    EVENT_PROPS, MAX_EVENT_BYTES, MAX_EVENTS_PER_REQUEST, Event, EventBatch, EventResult, EventResults, Feedback,
)
from gateway.scrub import scrub
from gateway.store import EventRow, Project, StoreUnavailable

ACCEPTED_TYPES = ("application/json", "text/plain")

_decode_batch = msgspec.json.Decoder(EventBatch).decode
_decode_event = msgspec.json.Decoder(Event).decode
_encode = msgspec.json.Encoder().encode
_encode_props = msgspec.json.Encoder().encode


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, decompressed, refused (413) past `limit` bytes — checked while reading, not after."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise HTTPProblem("unsupported_media_type", f"Content-Encoding {encoding!r} is not supported; use gzip or none")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPProblem("too_large", f"body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPProblem("too_large", f"body exceeds {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if encoding == "gzip":
        inflater = zlib.decompressobj(wbits=31)
        try:
            body = inflater.decompress(body, limit + 1)
        except zlib.error:
            raise HTTPProblem("malformed", "body is not valid gzip") from None
        if len(body) > limit or inflater.unconsumed_tail:
            raise HTTPProblem("too_large", f"decompressed body exceeds {limit} bytes")
        if not inflater.eof:
            raise HTTPProblem("malformed", "gzip body is truncated")
    return body


def _event_error(exc: msgspec.ValidationError) -> str:
    return "unknown_type" if "`$.type`" in str(exc) else "invalid_event"


def _raw_id(raw: bytes) -> str:
    """The id of an event that failed validation, for its result line (best effort)."""
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return ""
    return str(value.get("id", "")) if isinstance(value, dict) else ""


def client_ip(request: Request, trust_forwarded_for: bool) -> str:
    if trust_forwarded_for and (forwarded := request.headers.get("x-forwarded-for")):
        return forwarded.split(",")[0].strip()
    return request.client.host if request.client else "unknown"


def hash_ip(ip: str, salt: str, day: int) -> str:
    """Salted, day-scoped hash: enough to rate-limit and group, useless to find the person. Raw IPs are never stored."""
    return hashlib.sha256(f"{salt}:{day}:{ip}".encode()).hexdigest()[:16]


def cors_headers(request: Request) -> dict[str, str]:
    # Every answer (errors too) is readable by the page, so the widget can tell "refused" from "network down".
    origin = request.headers.get("origin")
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"} if origin else {}


async def preflight(request: Request) -> Response:
    gateway = request.app.state.gateway
    origin = request.headers.get("origin")
    project = await gateway.directory.project(request.query_params.get("project", ""))
    if project is None or not project.allows_origin(origin):
        return Response(status_code=403, headers={"Vary": "Origin"})
    return Response(status_code=204, headers={
        "Access-Control-Allow-Origin": origin or "*",
        "Access-Control-Allow-Methods": "POST",
        "Access-Control-Allow-Headers": "Content-Type, Content-Encoding",
        "Access-Control-Max-Age": "86400",
        "Vary": "Origin",
    })


class _Checked:
    """One event after validation: either a row to store or the error it was rejected with."""

    __slots__ = ("id", "row", "error")

    def __init__(self, id: str, row: EventRow | None = None, error: str | None = None) -> None:
        self.id, self.row, self.error = id, row, error


async def _check_event(gateway: Any, project: Project, raw: bytes, ip_hash: str) -> _Checked:
    if len(raw) > MAX_EVENT_BYTES:
        return _Checked(_raw_id(raw), error="event_too_large")
    try:
        event = _decode_event(raw)
    except msgspec.ValidationError as exc:
        return _Checked(_raw_id(raw), error=_event_error(exc))
    except msgspec.DecodeError:
        return _Checked("", error="invalid_event")
    event_id = str(event.id)
    if event.token is not None:
        try:
            parsed = tokens.parse(event.token)
            key = await gateway.directory.token_key(project, parsed.claims.k)
            claims = tokens.verify(parsed, key, public_key=project.public_key, trace_id=event.trace_id)
        except tokens.InvalidToken:
            return _Checked(event_id, error="invalid_token")
        if event.session_id is not None and event.session_id != claims.s:
            return _Checked(event_id, error="invalid_token")
        session_id = claims.s
    elif project.require_token:
        return _Checked(event_id, error="invalid_token")
    elif event.session_id is None:
        return _Checked(event_id, error="missing_session")
    else:
        session_id = event.session_id
    value = reason = comment = None
    if isinstance(event, Feedback):
        if event.reason is not None and event.reason not in {r.code for r in project.reasons}:
            return _Checked(event_id, error="invalid_reason")
        value, reason = event.value, event.reason
        comment = scrub(event.comment) if event.comment else None
    props = {name: getattr(event, name) for name in EVENT_PROPS if getattr(event, name, None) is not None}
    row = EventRow(id=event_id, trace_id=event.trace_id, session_id=session_id, type=type(event).__struct_config__.tag,
                   value=value, reason=reason, comment=comment, props=_encode_props(props).decode() if props else None,
                   ts=event.ts, ip_hash=ip_hash)
    return _Checked(event_id, row=row)


async def post_events(request: Request) -> Response:
    gateway = request.app.state.gateway
    cors = cors_headers(request)
    try:
        return await _post_events(request, gateway, cors)
    except HTTPProblem as problem:
        gateway.metrics.requests_failed[problem.code] += 1
        raise HTTPProblem(problem.code, problem.detail, {**problem.headers, **cors}) from None


async def _post_events(request: Request, gateway: Any, cors: dict[str, str]) -> Response:
    settings = gateway.settings
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ACCEPTED_TYPES:
        raise HTTPProblem("unsupported_media_type", "send application/json or text/plain (sendBeacon) JSON")
    body = await read_body(request, settings.max_body_bytes)
    try:
        batch = _decode_batch(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise HTTPProblem("malformed", f"body is not a valid event batch: {exc}") from None
    if batch.project.startswith("sk_"):
        raise HTTPProblem("unknown_project", "secret keys never work on browser routes; send the public key (pk_...)")
    project = await gateway.directory.project(batch.project)
    if project is None:
        raise HTTPProblem("unknown_project", "no project has this public key")
    origin = request.headers.get("origin")
    if not project.allows_origin(origin):
        raise HTTPProblem("origin_not_allowed", f"origin {origin!r} is not allowed for this project")
    if len(batch.events) > MAX_EVENTS_PER_REQUEST:
        raise HTTPProblem("too_large", f"{len(batch.events)} events; at most {MAX_EVENTS_PER_REQUEST} per request")

    ip = client_ip(request, settings.trust_forwarded_for)
    ip_hash = hash_ip(ip, gateway.ip_salt, gateway.today())
    checked = [await _check_event(gateway, project, raw, ip_hash) for raw in batch.events]

    # Rate limits: per session (its valid events), per client IP and per project (every event, valid or not).
    sessions: dict[str, int] = {}
    for item in checked:
        if item.row is not None:
            sessions[item.row.session_id] = sessions.get(item.row.session_id, 0) + 1
    cost = max(1, len(checked))
    limits = [Limit(f"s:{project.id}:{s}", gateway.rates.session, n) for s, n in sessions.items()]
    limits.append(Limit(f"ip:{project.id}:{ip_hash}", gateway.rates.ip, cost))
    limits.append(Limit(f"p:{project.id}", gateway.rates.project, cost))
    candidates = {item.id for item in checked if item.row is not None}
    check = await gateway.limiter.check(limits, [f"{project.id}:{i}" for i in candidates])
    if not check.allowed:
        retry = max(1, math.ceil(check.retry_after))
        raise HTTPProblem("rate_limited", f"rate limit reached; retry in {retry} s", {"Retry-After": str(retry)})

    # Fast-path duplicates (known committed), duplicates inside this batch, then one commit for the rest.
    results: list[EventResult | None] = []
    to_store: list[tuple[int, EventRow]] = []
    seen_here: set[str] = set()
    for item in checked:
        if item.row is None:
            results.append(EventResult(item.id, "rejected", item.error))
        elif item.id in seen_here or f"{project.id}:{item.id}" in check.seen:
            results.append(EventResult(item.id, "duplicate"))
        else:
            seen_here.add(item.id)
            to_store.append((len(results), item.row))
            results.append(None)
    if to_store:
        try:
            outcomes = await gateway.store.write_events(project.id, [row for _, row in to_store])
        except StoreUnavailable:
            raise HTTPProblem("store_unavailable", "the store could not commit; nothing was stored, retry",
                              {"Retry-After": "1"}) from None
        committed = []
        for (index, row), outcome in zip(to_store, outcomes):
            if outcome in ("accepted", "duplicate"):
                results[index] = EventResult(row.id, outcome)
                committed.append(f"{project.id}:{row.id}")
            else:
                results[index] = EventResult(row.id, "rejected", outcome)
        gateway.remember_later(committed)

    for result in results:
        gateway.metrics.events[result.status] += 1
        if result.error:
            gateway.metrics.rejected[result.error] += 1
    return Response(_encode(EventResults(results)), media_type="application/json", headers=cors)
