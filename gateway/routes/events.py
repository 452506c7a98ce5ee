"""`POST /v1/events`: the browser's door. Authenticate, validate, rate-limit, de-duplicate, commit, then answer.

Nearly every request the gateway serves comes here, so this route is a raw ASGI app (`EventsEndpoint`): the
application hands it `POST /v1/events` before Starlette's middleware and router, and it answers its own errors.
"""

from __future__ import annotations

import hashlib
import math
import time
import zlib
from functools import lru_cache, partial
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway import tokens
from gateway.errors import HTTPProblem, problem_body
from gateway.ratelimit import Limit
from gateway.schemas import (
    EVENT_PROPS, MAX_EVENT_BYTES, MAX_EVENTS_PER_REQUEST, Event, EventBatch, EventResult, EventResults, Feedback,
    TypedEventBatch,
)
from gateway.scrub import scrub
from gateway.store import EventRow, Project, StoreUnavailable

ACCEPTED_TYPES = (b"application/json", b"text/plain")

_decode_batch = msgspec.json.Decoder(EventBatch).decode
_decode_typed_batch = msgspec.json.Decoder(TypedEventBatch).decode
_decode_event = msgspec.json.Decoder(Event).decode
_encode = msgspec.json.Encoder().encode
_encode_props = msgspec.json.Encoder().encode
# Per event class: its type tag and the fields kept in the row's `props`.
_KINDS = {cls: (cls.__struct_config__.tag, names) for cls, names in EVENT_PROPS.items()}


async def read_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes:
    """The request body, decompressed, refused (413) past `limit` bytes — checked while reading, not after."""
    encoding = headers.get(b"content-encoding")
    if encoding is not None:
        encoding = encoding.decode("latin-1").strip().lower()
        if encoding not in ("identity", "gzip"):
            raise HTTPProblem("unsupported_media_type",
                              f"Content-Encoding {encoding!r} is not supported; use gzip or none")
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPProblem("too_large", f"body is {declared.decode()} bytes; the limit is {limit}")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HTTPProblem("malformed", "the client went away before the body ended")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HTTPProblem("too_large", f"body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
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


def client_ip(scope: Scope, headers: dict[bytes, bytes], trust_forwarded_for: bool) -> str:
    if trust_forwarded_for and (forwarded := headers.get(b"x-forwarded-for")):
        return forwarded.decode("latin-1").split(",")[0].strip()
    client = scope.get("client")
    return client[0] if client else "unknown"


@lru_cache(maxsize=8192)
def hash_ip(ip: str, salt: str, day: int) -> str:
    """Salted, day-scoped hash: enough to rate-limit and group, useless to find the person. Raw IPs are never stored."""
    return hashlib.sha256(f"{salt}:{day}:{ip}".encode()).hexdigest()[:16]


def cors_headers(origin: str | None) -> dict[str, str]:
    # Every answer (errors too) is readable by the page, so the widget can tell "refused" from "network down".
    # Retry-After must be exposed, or a cross-origin widget cannot honour it on a 429 or 503.
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": "Retry-After",
            "Vary": "Origin"} if origin else {}


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


def _decode(raw: bytes) -> Event | _Checked:
    if len(raw) > MAX_EVENT_BYTES:
        return _Checked(_raw_id(raw), error="event_too_large")
    try:
        return _decode_event(raw)
    except msgspec.ValidationError as exc:
        return _Checked(_raw_id(raw), error=_event_error(exc))
    except msgspec.DecodeError:
        return _Checked("", error="invalid_event")


async def _signed_claims(gateway: Any, project: Project, events: list[Event | _Checked]) -> dict[str, tokens.Claims]:
    """The claims of each distinct genuine token in the batch (a widget sends one token for many events)."""
    key_for = partial(gateway.directory.token_key, project)
    claims = {}
    for token in {e.token for e in events if not isinstance(e, _Checked) and e.token is not None}:
        try:
            claims[token] = await gateway.tokens.signed_claims(token, key_for)
        except tokens.InvalidToken:
            pass
    return claims


def _check(event: Event, project: Project, claims: dict[str, tokens.Claims], ip_hash: str, now: float) -> _Checked:
    event_id = event.id.lower()
    if event.token is not None:
        token_claims = claims.get(event.token)
        if token_claims is None or not tokens.binds(token_claims, project.public_key, event.trace_id, now):
            return _Checked(event_id, error="invalid_token")
        if event.session_id is not None and event.session_id != token_claims.s:
            return _Checked(event_id, error="invalid_token")
        session_id = token_claims.s
    elif project.require_token:
        return _Checked(event_id, error="invalid_token")
    elif event.session_id is None:
        return _Checked(event_id, error="missing_session")
    else:
        session_id = event.session_id
    value = reason = comment = None
    if type(event) is Feedback:
        if event.reason is not None and event.reason not in project.reason_codes:
            return _Checked(event_id, error="invalid_reason")
        value, reason = event.value, event.reason
        comment = scrub(event.comment) if event.comment else None
    kind, prop_names = _KINDS[type(event)]
    props = {name: prop for name in prop_names if (prop := getattr(event, name)) is not None}
    row = EventRow(event_id, event.trace_id, session_id, kind, value, reason, comment,
                   _encode_props(props).decode() if props else None, event.ts, ip_hash)
    return _Checked(event_id, row=row)


class EventsEndpoint:
    """`POST /v1/events` as a raw ASGI app: answers every request itself, errors (problem+json) included."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.gateway
        headers = dict(scope["headers"])  # one pass, not a scan per look-up (ASGI names are lower-case)
        origin = headers[b"origin"].decode("latin-1") if b"origin" in headers else None
        cors = _raw_cors_headers(origin)
        try:
            body = await _post_events(gateway, scope, receive, headers, origin)
        except HTTPProblem as problem:
            gateway.metrics.requests_failed[problem.code] += 1
            status, body = problem_body(problem.code, problem.detail)
            extra = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in problem.headers.items()]
            await _answer(send, status, b"application/problem+json", body, [*cors, *extra])
            return
        await _answer(send, 200, b"application/json", body, cors)


@lru_cache(maxsize=1024)
def _raw_cors_headers(origin: str | None) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in cors_headers(origin).items())


async def _answer(send: Send, status: int, content_type: bytes, body: bytes, headers: Any) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", b"%d" % len(body)), *headers]})
    await send({"type": "http.response.body", "body": body})


def _decode_body(body: bytes) -> tuple[str, list[Event | _Checked]]:
    """The batch's project key and its events, each decoded or the error it was rejected with.

    Most batches are valid throughout, so one typed decode does them all; one invalid event sends the batch through
    the per-event path instead, where a bad event rejects only itself.
    """
    if len(body) <= MAX_EVENT_BYTES:  # so no event in it can be over the per-event limit
        try:
            typed = _decode_typed_batch(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass
        else:
            return typed.project, typed.events
    try:
        batch = _decode_batch(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise HTTPProblem("malformed", f"body is not a valid event batch: {exc}") from None
    return batch.project, [_decode(raw) for raw in batch.events]


async def _post_events(gateway: Any, scope: Scope, receive: Receive, headers: dict[bytes, bytes],
                       origin: str | None) -> bytes:
    settings = gateway.settings
    media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    if media_type not in ACCEPTED_TYPES:
        raise HTTPProblem("unsupported_media_type", "send application/json or text/plain (sendBeacon) JSON")
    body = await read_body(receive, headers, settings.max_body_bytes)
    project_key, events = _decode_body(body)
    if project_key.startswith("sk_"):
        raise HTTPProblem("unknown_project", "secret keys never work on browser routes; send the public key (pk_...)")
    project = await gateway.directory.project(project_key)
    if project is None:
        raise HTTPProblem("unknown_project", "no project has this public key")
    if not project.allows_origin(origin):
        raise HTTPProblem("origin_not_allowed", f"origin {origin!r} is not allowed for this project")
    if len(events) > MAX_EVENTS_PER_REQUEST:
        raise HTTPProblem("too_large", f"{len(events)} events; at most {MAX_EVENTS_PER_REQUEST} per request")

    ip = client_ip(scope, headers, settings.trust_forwarded_for)
    ip_hash = hash_ip(ip, gateway.ip_salt, gateway.today())
    claims = await _signed_claims(gateway, project, events)
    now = time.time()
    checked = [e if isinstance(e, _Checked) else _check(e, project, claims, ip_hash, now) for e in events]

    # Rate limits: per session (its valid events), per client IP and per project (every event, valid or not).
    sessions: dict[str, int] = {}
    for item in checked:
        if item.row is not None:
            sessions[item.row.session_id] = sessions.get(item.row.session_id, 0) + 1
    cost = max(1, len(checked))
    limits = [Limit(f"s:{project.id}:{s}", gateway.rates.session, n) for s, n in sessions.items()]
    limits.append(Limit(f"ip:{project.id}:{ip_hash}", gateway.rates.ip, cost))
    limits.append(Limit(f"p:{project.id}", gateway.rates.project, cost))
    prefix = f"{project.id}:"
    keys = {item.id: prefix + item.id for item in checked if item.row is not None}  # de-dup keys, namespaced
    check = await gateway.limiter.check(limits, list(keys.values()))
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
        elif item.id in seen_here or (check.seen and keys[item.id] in check.seen):
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
            if outcome == "accepted" or outcome == "duplicate":
                results[index] = EventResult(row.id, outcome)
                committed.append(keys[row.id])
            else:
                results[index] = EventResult(row.id, "rejected", outcome)
        gateway.remember_later(committed)

    statuses, errors = gateway.metrics.events, gateway.metrics.rejected
    for result in results:
        statuses[result.status] += 1
        if result.error:
            errors[result.error] += 1
    return _encode(EventResults(results))
