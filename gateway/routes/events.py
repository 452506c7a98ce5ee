"""`POST /v1/events`: the browser's door. Decode, authenticate, limit, de-duplicate, store, then answer.

Nearly every request the gateway serves comes here, so this route is a raw ASGI app (`EventsEndpoint`) that answers
its own errors: `gateway/fastpath.py` hands it `POST /v1/events` ahead of Starlette's middleware and router.
"""

from __future__ import annotations

import dataclasses
import math
import time
from functools import lru_cache
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway import bounds, tokens
from gateway.body import check_depth, check_media_type, read_body
from gateway.core import Gateway, Rates, gateway_of
from gateway.errors import HTTPProblem, problem_body
from gateway.ratelimit import Limit
from gateway.schemas import (
    EVENT_PROPS, MAX_EVENT_BYTES, MAX_EVENTS_PER_REQUEST, Event, EventBatch, EventResult, EventResults, Feedback,
    ServerEventBatch, TypedEventBatch,
)
from gateway.scrub import scrub
from gateway.store import EventRow, Project, StoreUnavailable

ACCEPTED_TYPES = (b"application/json", b"text/plain")

_decode_batch = msgspec.json.Decoder(EventBatch).decode
_decode_server_batch = msgspec.json.Decoder(ServerEventBatch).decode
_decode_typed_batch = msgspec.json.Decoder(TypedEventBatch).decode
_decode_event = msgspec.json.Decoder(Event).decode
_encode = msgspec.json.Encoder().encode
_encode_props = msgspec.json.Encoder().encode
# The props that are whole numbers, which a client may have written as 5.0 (see schemas._whole); stored as ints.
_WHOLE_PROPS = frozenset(("dwell_ms", "length", "attempt"))
# Per event class: its type tag and the fields kept in the row's `props`.
_KINDS = {cls: (cls.__struct_config__.tag, names) for cls, names in EVENT_PROPS.items()}


def _event_error(exc: msgspec.ValidationError) -> str:
    return "unknown_type" if "`$.type`" in str(exc) else "invalid_event"


def _raw_id(raw: bytes) -> str:
    """The id of an event that failed validation, for its result line (best effort)."""
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return ""
    return str(value.get("id", "")) if isinstance(value, dict) else ""


def cors_headers(origin: str | None) -> dict[str, str]:
    # Every answer (errors too) is readable by the page, so the widget can tell "refused" from "network down".
    # Retry-After must be exposed, or a cross-origin widget cannot honour it on a 429 or 503.
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": "Retry-After",
            "Vary": "Origin"} if origin else {}


async def preflight(request: Request) -> Response:
    gateway = gateway_of(request)
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


class _Undecodable:
    """An event that did not decode: the id it seems to have (best effort) and the error it is rejected with."""

    __slots__ = ("id", "error")

    def __init__(self, id: str, error: str) -> None:
        self.id, self.error = id, error


def _decode(raw: bytes) -> Event | _Undecodable:
    if len(raw) > MAX_EVENT_BYTES:
        return _Undecodable(_raw_id(raw), "event_too_large")
    try:
        return _decode_event(raw)
    except msgspec.ValidationError as exc:
        return _Undecodable(_raw_id(raw), _event_error(exc))
    except msgspec.DecodeError:
        return _Undecodable("", "invalid_event")


def _check(event: Event, project: Project, claims: dict[str, tokens.Claims], ip_hash: str, now: float,
           clock: bounds.ClockWindow) -> EventRow | str:
    """The row to store for a decoded event, or the error code it is rejected with. `clock`: the request's window of
    believed client times, computed once per request."""
    if event.token is not None:
        token_claims = claims.get(event.token)
        if token_claims is None or not tokens.binds(token_claims, project.public_key, event.trace_id, now):
            return "invalid_token"
        if event.session_id is not None and event.session_id != token_claims.s:
            return "invalid_token"
        session_id = token_claims.s
    elif project.require_token:
        return "invalid_token"
    elif event.session_id is None:
        return "missing_session"
    else:
        session_id = event.session_id
    value = reason = comment = None
    if type(event) is Feedback:
        if event.reason is not None and event.reason not in project.reason_codes:
            return "invalid_reason"
        value, reason = event.value, event.reason
        comment = scrub(event.comment) if event.comment else None
    kind, prop_names = _KINDS[type(event)]
    props = None
    for name in prop_names:  # a loop, not a comprehension: most events have one prop or none
        if (prop := getattr(event, name)) is not None:
            if props is None:
                props = {}
            props[name] = int(prop) if type(prop) is float and name in _WHOLE_PROPS else prop
    return EventRow(event.id, event.trace_id, session_id, kind, value, reason, comment,
                    _encode_props(props).decode() if props else None, clock.event_time(event.ts), ip_hash)


class EventsEndpoint:
    """`POST /v1/events` as a raw ASGI app: answers every request itself, errors (problem+json) included."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.gateway
        headers = dict(scope["headers"])  # one pass, not a scan per look-up (ASGI names are lower-case)
        origin = headers[b"origin"].decode("latin-1") if b"origin" in headers else None
        try:
            body = await _post_events(gateway, scope, receive, headers, origin)
        except HTTPProblem as problem:
            gateway.metrics.request_failed(problem.code)
            status, body = problem_body(problem.code, problem.detail)
            extra = {**cors_headers(origin), **problem.headers}
            await _answer(send, status, b"application/problem+json", body,
                          [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in extra.items()])
            return
        await _answer(send, 200, b"application/json", body, _allow_origin(origin))


@lru_cache(maxsize=1024)
def _allow_origin(origin: str | None) -> tuple[tuple[bytes, bytes], ...]:
    """All the CORS a 200 answer needs: it has no Retry-After to expose, and an answer to a POST is never cached
    (so no Vary). Each header costs the server ~1 µs to check and write, on every request."""
    return ((b"access-control-allow-origin", origin.encode("latin-1")),) if origin else ()


async def _answer(send: Send, status: int, content_type: bytes, body: bytes, headers: Any) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", b"%d" % len(body)), *headers]})
    await send({"type": "http.response.body", "body": body})


def _decode_body(body: bytes) -> tuple[str, list[Event | _Undecodable]]:
    """The batch's project key and its events, each decoded or the error it was rejected with.

    Most batches are valid throughout, so one typed decode does them all; one invalid event sends the batch through
    the per-event path instead, where a bad event rejects only itself.
    """
    if len(body) <= MAX_EVENT_BYTES:  # so no event in it can be over the per-event limit
        try:
            typed = _decode_typed_batch(body)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):  # too deep: refused just below
            pass
        else:
            return typed.project, typed.events
    check_depth(body)
    try:
        batch = _decode_batch(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise HTTPProblem("malformed", f"body is not a valid event batch: {exc}") from None
    return batch.project, [_decode(raw) for raw in batch.events]


async def _server_auth(gateway: Gateway, scope: Scope, body: bytes
                       ) -> tuple[Project, dict[str, tokens.Claims], list[Event | _Undecodable]]:
    """Server-side ingest: `Authorization: Bearer sk_...` is the authority, so events need no token, only their
    `session_id`, for any trace of the key's project; the body's `project`, if present, must be that project."""
    project, _ = await gateway.directory.server_auth(Request(scope))
    check_depth(body)
    try:
        batch = _decode_server_batch(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise HTTPProblem("malformed", f"body is not a valid event batch: {exc}") from None
    if batch.project is not None and batch.project != project.public_key:
        raise HTTPProblem("malformed", "`project` is not the secret key's project: leave it out, or send its pk_...")
    # No claims: a server-side event that carries a token anyway is rejected invalid_token, never half-trusted.
    return dataclasses.replace(project, require_token=False), {}, [_decode(raw) for raw in batch.events]


async def _post_events(gateway: Gateway, scope: Scope, receive: Receive, headers: dict[bytes, bytes],
                       origin: str | None) -> bytes:
    settings = gateway.settings
    check_media_type(scope["headers"], ACCEPTED_TYPES, headers)  # text/plain: sendBeacon's JSON
    body = await read_body(receive, headers, settings.max_body_bytes)
    if b"authorization" in headers:  # a backend, app or bot with the secret key (the browser never sends one)
        project, claims, events = await _server_auth(gateway, scope, body)
    else:
        project_key, events = _decode_body(body)
        project, claims = await gateway.directory.browser_auth(project_key, origin, events)
    if len(events) > MAX_EVENTS_PER_REQUEST:
        raise HTTPProblem("too_large", f"{len(events)} events; at most {MAX_EVENTS_PER_REQUEST} per request")
    if (day := gateway.today()) != gateway.salt_day:
        await gateway.roll_salt(day)
    ip_hash = gateway.client_key(scope, headers)

    # Each event's result, or (its place left None) its row to store.
    results: list[EventResult | None] = []
    rows: list[EventRow] = []
    places: list[int] = []  # each row's index in results
    now = time.time()
    clock = bounds.ClockWindow.at(int(now * 1000))
    for event in events:
        if type(event) is _Undecodable:
            results.append(EventResult(event.id, "rejected", event.error))
            continue
        row = _check(event, project, claims, ip_hash, now, clock)
        if type(row) is str:
            results.append(EventResult(event.id, "rejected", row))
        else:
            places.append(len(results))
            results.append(None)
            rows.append(row)

    dedup = gateway.dedup
    if repeats := dedup.repeats(rows):
        _answer_duplicates(repeats, results, rows, places)
    keys = dedup.keys(project, rows)  # none without a fast path
    check = await gateway.limiter.check(_limits(gateway.rates, project, ip_hash, rows, len(events)), keys)
    if not check.allowed:
        retry = max(1, math.ceil(check.retry_after))
        raise HTTPProblem("rate_limited", f"rate limit reached; retry in {retry} s", {"Retry-After": str(retry)})
    if check.seen:
        _answer_duplicates(dedup.known(keys, check.seen), results, rows, places, keys)

    if rows:
        try:
            outcomes = await gateway.store.write_events(project.id, rows)
        except StoreUnavailable:
            raise HTTPProblem("store_unavailable", "the store could not commit; nothing was stored, retry",
                              {"Retry-After": "1"}) from None
        for place, row, outcome in zip(places, rows, outcomes):
            if outcome == "accepted" or outcome == "duplicate":
                results[place] = EventResult(row.id, outcome)
            else:
                results[place] = EventResult(row.id, "rejected", outcome)
        if keys:
            dedup.remember(keys, outcomes)

    gateway.metrics.count_results(results)  # type: ignore[arg-type]  # every place is filled by now
    return _encode(EventResults(results))  # type: ignore[arg-type]


def _answer_duplicates(indexes: list[int], results: list[EventResult | None], rows: list[EventRow],
                       places: list[int], keys: list[str] | None = None) -> None:
    """Answer these rows `duplicate` and take them out of what is left to store (and of `keys`, if given)."""
    for i in reversed(indexes):
        results[places[i]] = EventResult(rows[i].id, "duplicate")
        del places[i], rows[i]
        if keys:
            del keys[i]


def _limits(rates: Rates, project: Project, ip_hash: str, rows: list[EventRow], events: int) -> list[Limit]:
    """Per session its events to store; per client IP and per project every event, valid or not."""
    ns = project.key_prefix
    cost = events or 1
    limits = [Limit("ip:" + ns + ip_hash, rates.ip, cost), Limit("p:" + ns, rates.project, cost)]
    sessions: dict[str, int] = {}
    for row in rows:
        sessions[row.session_id] = sessions.get(row.session_id, 0) + 1
    for session_id, count in sessions.items():
        limits.append(Limit("s:" + ns + session_id, rates.session, count))
    return limits
