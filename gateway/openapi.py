"""The OpenAPI 3.1 document, generated from the msgspec Structs the routes decode and encode.

Every public route is here (tests/test_openapi.py walks the app's routes against it); each response body is the Struct
its route encodes, each error the problem+json of its code in `gateway/errors.py`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

import msgspec

from gateway import __version__
from gateway.analytics.rates import DIMENSIONS, StatsAnswer
from gateway.errors import ERRORS
from gateway.exports.formats import PREFERENCE_FORMATS, EvalLine, OpenAIPreference, TrlPreference, TrlUnpaired
from gateway.forwarding.destinations import (
    DestinationCreated, DestinationList, DestinationOut, NewDestination, TestResult,
)
from gateway.routes.alerts import STATES, AlertList
from gateway.routes.destinations import Requeued
from gateway.routes.labels import LabelSet, Taxonomy
from gateway.routes.queues import AsReviewer, ClaimedItem, FillResult, ItemOutcome, LabelBody, QueueList, QueueOut
from gateway.routes.stats import MAX_FILTER_CHARS
from gateway.review.queues import QueueSpec
from gateway.schemas import (
    DEFAULT_EVENTS_PAGE, MAX_EVENTS_PAGE, MAX_EVENTS_PER_REQUEST, Event, EventResults, Health, Problem, ProjectConfig,
    PublicKey, Readiness, TraceCreated, TraceIn, TraceOut,
)


class EventBatchDoc(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /v1/events` body from a browser. Each event is validated on its own: a bad one is rejected, its
    neighbours go on."""

    project: PublicKey
    events: Annotated[list[Event], msgspec.Meta(max_length=MAX_EVENTS_PER_REQUEST)]


class ServerEventBatchDoc(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /v1/events` body with `Authorization: Bearer sk_...`: the key names the project (`project`, if given,
    must be its public key); events carry `session_id`, not a token."""

    events: Annotated[list[Event], msgspec.Meta(max_length=MAX_EVENTS_PER_REQUEST)]
    project: PublicKey | None = None


# Everything the document names, in one schema_components call so each Struct is one component.
_TYPES: dict[str, Any] = {cls.__name__: cls for cls in (
    EventBatchDoc, ServerEventBatchDoc, EventResults, TraceIn, TraceCreated, TraceOut, ProjectConfig, Problem, Health,
    Readiness, StatsAnswer, AlertList, LabelSet, Taxonomy, QueueSpec, QueueOut, QueueList, FillResult, AsReviewer,
    ClaimedItem, LabelBody, ItemOutcome, EvalLine, TrlPreference, TrlUnpaired, OpenAIPreference, DestinationCreated,
    DestinationList, DestinationOut, TestResult, Requeued)} | {"NewDestination": NewDestination}
SECRET = [{"secretKey": []}]
SECRET_OR_REVIEWER = [{"secretKey": []}, {"reviewerKey": []}]
# What any route behind a key may answer before it reaches its own work.
AUTH_ERRORS = ("unauthorized", "forbidden")
BODY_ERRORS = ("malformed", "request_timeout", "too_large", "unsupported_media_type")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _problems(*codes: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for code in codes:
        status, title = ERRORS[code]
        assert status is not None, f"{code} is a per-event code"
        entry = out.setdefault(str(status), {"description": "", "content": {"application/problem+json": {
            "schema": _ref("Problem")}}})
        entry["description"] = "; ".join(filter(None, [entry["description"], f"`{code}`: {title}"]))
    return out


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _path(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


def _op(summary: str, *, ok: dict[str, Any], errors: tuple[str, ...] = (), security: list[Any] | None = None,
        body: dict[str, Any] | None = None, parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One operation. `ok`: status -> (description, content or None). Routes behind a key also answer the auth
    errors, and any route's write the store cannot commit answers `store_unavailable`."""
    codes = (*(AUTH_ERRORS if security else ()), *errors, "store_unavailable")
    operation: dict[str, Any] = {"summary": summary}
    if security is not None:
        operation["security"] = security
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": True, "content": body}
    responses: dict[str, Any] = {}
    for status, (description, content) in ok.items():
        responses[status] = {"description": description, **({"content": content} if content else {})}
    operation["responses"] = {**responses, **_problems(*dict.fromkeys(codes))}
    return operation


_DIMENSION = rf"\s*({'|'.join(DIMENSIONS)})?\s*"
_GROUP_BY = rf"^{_DIMENSION}(,{_DIMENSION})*$"
_FLAG = "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0)?$"  # in any case; empty is false


def _time(name: str, what: str) -> dict[str, Any]:
    return _query(name, {"type": "string"},
                  f"{what}: ISO 8601 (a time without a zone is UTC), ms since the epoch, or a duration before now "
                  "(`7d`, `24h`, `30m`)")


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    schemas, components = msgspec.json.schema_components(_TYPES.values(), ref_template="#/components/schemas/{name}")
    s = dict(zip(_TYPES, schemas))
    event_errors = sorted(code for code, (status, _) in ERRORS.items() if status is None)
    ndjson = "application/x-ndjson"
    queue_id = _path("queue_id")
    item_id = _path("item_id", {"type": "integer", "minimum": 0})
    destination_id = _path("destination_id")
    reviewer_note = ("With the secret key, name the reviewer who acts (`reviewer`); with a reviewer key, the key is "
                     "the reviewer.")
    return {
        "openapi": "3.1.0",
        "info": {"title": "Backchannel gateway", "version": __version__,
                 "description": "Per-event error codes: " + ", ".join(f"`{c}`" for c in event_errors)},
        "components": {
            "schemas": components,
            "securitySchemes": {
                "secretKey": {"type": "http", "scheme": "bearer", "description": "sk_... secret key"},
                "reviewerKey": {"type": "http", "scheme": "bearer",
                                "description": "rk_... reviewer key (`backchannel reviewer add`)"},
                "metricsToken": {"type": "http", "scheme": "bearer", "description": "BACKCHANNEL_METRICS_TOKEN"},
            },
        },
        "paths": {
            "/v1/events": {
                "post": _op(
                    "Send feedback events: from the browser (each with its feedback token), or from a server with the "
                    "secret key (tokenless, with `session_id`)",
                    security=[{}, *SECRET],
                    parameters=[_query("project", {"type": "string"},
                                       "Public key, so the CORS preflight can be answered per project")],
                    body={media: {"schema": {"anyOf": [s["EventBatchDoc"], s["ServerEventBatchDoc"]]}}
                          for media in ("application/json", "text/plain")},
                    ok={"200": ("One result per event, in request order", _json(s["EventResults"]))},
                    errors=(*BODY_ERRORS, "unauthorized", "unknown_project", "origin_not_allowed", "rate_limited")),
                "options": {
                    "summary": "CORS preflight for the browser",
                    "parameters": [_query("project", {"type": "string"}, "The project's public key")],
                    "responses": {"204": {"description": "This Origin may send events to this project"},
                                  "403": {"description": "Unknown project, or an Origin it does not allow"}}},
            },
            "/v1/traces": {"post": _op(
                "Log a generation; returns the feedback token to embed beside it", security=SECRET,
                body=_json(s["TraceIn"]),
                ok={"201": ("Created", _json(s["TraceCreated"])), "200": ("Updated", _json(s["TraceCreated"]))},
                errors=BODY_ERRORS)},
            "/v1/traces/{trace_id}": {"get": _op(
                "A trace with a page of its event log, and its current votes and signals (whole). A reviewer key "
                "reads only the traces of the items it holds", security=SECRET_OR_REVIEWER,
                parameters=[
                    _path("trace_id"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_EVENTS_PAGE,
                                     "default": DEFAULT_EVENTS_PAGE}, "Most events in this page"),
                    _query("after", {"type": "string"},
                           "The previous page's `next_after`: this page starts after that event")],
                ok={"200": ("The trace", _json(s["TraceOut"]))},
                errors=("invalid_parameter", "not_found"))},
            "/v1/projects/{public_key}/config": {"get": _op(
                "Widget configuration (public)", parameters=[_path("public_key")],
                ok={"200": ("Config", _json(s["ProjectConfig"]))}, errors=("not_found",))},
            "/v1/projects/{public_key}/labels": {
                "get": _op("The project's label taxonomy", security=SECRET, parameters=[_path("public_key")],
                           ok={"200": ("The labels", _json(s["Taxonomy"]))}, errors=("not_found",)),
                "put": _op("Replace the label taxonomy (a repeated label is one label)", security=SECRET,
                           parameters=[_path("public_key")], body=_json(s["LabelSet"]),
                           ok={"200": ("The labels now", _json(s["Taxonomy"]))}, errors=(*BODY_ERRORS, "not_found")),
            },
            "/v1/stats": {"get": _op(
                "Signal rates with Wilson 95% intervals, per group; each parameter at most once", security=SECRET,
                parameters=[
                    _query("group_by", {"type": "string", "maxLength": 200, "pattern": _GROUP_BY},
                           f"Comma list of {', '.join(f'`{d}`' for d in DIMENSIONS)}, each at most once"),
                    _query("from", {"type": "string", "maxLength": 40},
                           "Inclusive, on the trace's `ts`: ISO 8601 (UTC without an offset) or ms since the epoch"),
                    _query("to", {"type": "string", "maxLength": 40}, "Exclusive, after `from`; as `from`"),
                    _query("include_flagged", {"type": "string", "pattern": _FLAG},
                           "Count sessions flagged as outliers too (default false)"),
                    _query("model", {"type": "string", "minLength": 1, "maxLength": MAX_FILTER_CHARS},
                           "Only this model"),
                    _query("template", {"type": "string", "minLength": 1, "maxLength": MAX_FILTER_CHARS},
                           "Only this template")],
                ok={"200": ("The rates", _json(s["StatsAnswer"]))}, errors=("invalid_parameter",))},
            "/v1/alerts": {"get": _op(
                "The drift detector's alerts, newest first", security=SECRET,
                parameters=[_query("state", {"type": "string", "enum": list(STATES), "default": "open"},
                                   "Which alerts")],
                ok={"200": ("The alerts", _json(s["AlertList"]))}, errors=("invalid_parameter",))},
            "/v1/queues": {
                "post": _op("Create an annotation queue", security=SECRET, body=_json(s["QueueSpec"]),
                            ok={"201": ("The queue", _json(s["QueueOut"]))}, errors=BODY_ERRORS),
                "get": _op("The project's queues", security=SECRET, ok={"200": ("The queues", _json(s["QueueList"]))}),
            },
            "/v1/queues/{queue_id}": {"get": _op(
                "A queue: its spec, item counts, per-strategy counts and inter-reviewer agreement", security=SECRET,
                parameters=[queue_id], ok={"200": ("The queue", _json(s["QueueOut"]))}, errors=("not_found",))},
            "/v1/queues/{queue_id}/fill": {"post": _op(
                "Fill the queue once by its sampling strategy", security=SECRET, parameters=[queue_id],
                ok={"200": ("What was added", _json(s["FillResult"]))}, errors=("not_found",))},
            "/v1/queues/{queue_id}/claim": {"post": _op(
                "Claim the next item for a reviewer (a lease). " + reviewer_note + " An empty body is `{}`",
                security=SECRET_OR_REVIEWER, parameters=[queue_id], body=_json(s["AsReviewer"]),
                ok={"200": ("The item, its lease and its trace (pairwise: `a` and `b`)", _json(s["ClaimedItem"])),
                    "204": ("Nothing is left for this reviewer", None)},
                errors=(*BODY_ERRORS, "not_found"))},
            "/v1/queues/{queue_id}/items/{item_id}/label": {"post": _op(
                "Label an item the reviewer holds. " + reviewer_note, security=SECRET_OR_REVIEWER,
                parameters=[queue_id, item_id], body=_json(s["LabelBody"]),
                ok={"200": ("Labeled", _json(s["ItemOutcome"]))},
                errors=(*BODY_ERRORS, "unknown_label", "not_found", "not_lease_holder", "lease_expired"))},
            "/v1/queues/{queue_id}/items/{item_id}/skip": {"post": _op(
                "Skip an item the reviewer holds. " + reviewer_note + " An empty body is `{}`",
                security=SECRET_OR_REVIEWER, parameters=[queue_id, item_id], body=_json(s["AsReviewer"]),
                ok={"200": ("Skipped", _json(s["ItemOutcome"]))},
                errors=(*BODY_ERRORS, "not_found", "not_lease_holder", "lease_expired"))},
            "/v1/exports/evals": {"get": _op(
                "Labeled traces as an eval dataset, streamed: one JSON object per line", security=SECRET,
                parameters=[_time("since", "On the trace's `ts`, inclusive"), _time("until", "Exclusive"),
                            _query("queue", {"type": "string"}, "Only this queue's labels")],
                ok={"200": ("One `EvalLine` per line", {ndjson: {"schema": s["EvalLine"]}})},
                errors=("invalid_parameter", "not_found"))},
            "/v1/exports/preferences": {"get": _op(
                "Preference data in a training format, streamed: one JSON object per line", security=SECRET,
                parameters=[_query("format", {"type": "string", "enum": list(PREFERENCE_FORMATS), "default": "trl"},
                                   "`trl` (DPO), `trl_unpaired` (KTO) or `openai` (preference fine-tuning)"),
                            _time("since", "On the trace's `ts`, inclusive"), _time("until", "Exclusive")],
                ok={"200": ("One line of the format per line", {ndjson: {"schema": {"anyOf": [
                    s["TrlPreference"], s["TrlUnpaired"], s["OpenAIPreference"]]}}})},
                errors=("invalid_parameter",))},
            "/v1/destinations": {
                "post": _op("Add a forwarding destination; its credentials are never answered again",
                            security=SECRET, body=_json(s["NewDestination"]),
                            ok={"201": ("Its id (and a webhook's signing secret, only here)",
                                        _json(s["DestinationCreated"]))},
                            errors=(*BODY_ERRORS, "limit_reached", "not_configured")),
                "get": _op("The project's destinations with their delivery counts", security=SECRET,
                           ok={"200": ("The destinations", _json(s["DestinationList"]))}),
            },
            "/v1/destinations/{destination_id}": {
                "get": _op("A destination with its newest dead records", security=SECRET,
                           parameters=[destination_id], ok={"200": ("The destination", _json(s["DestinationOut"]))},
                           errors=("not_found",)),
                "delete": _op("Remove a destination and what is queued for it", security=SECRET,
                              parameters=[destination_id], ok={"204": ("Removed", None)}, errors=("not_found",)),
            },
            "/v1/destinations/{destination_id}/test": {"post": _op(
                "Send one marked test vote now and answer what the destination said", security=SECRET,
                parameters=[destination_id], ok={"200": ("What the destination said", _json(s["TestResult"]))},
                errors=("not_found", "not_configured"))},
            "/v1/destinations/{destination_id}/retry-dead": {"post": _op(
                "Requeue the destination's dead records", security=SECRET, parameters=[destination_id],
                ok={"200": ("How many", _json(s["Requeued"]))}, errors=("not_found",))},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "Alive",
                                                                             "content": _json(s["Health"])}}}},
            "/readyz": {"get": {"summary": "Readiness: store and Redis", "responses": {
                "200": {"description": "Ready, or degraded (Redis down: the gateway still serves)",
                        "content": _json(s["Readiness"])},
                "503": {"description": "Not ready: the store is down", "content": _json(s["Readiness"])}}}},
            "/metrics": {"get": {
                "summary": "Prometheus metrics (off until BACKCHANNEL_METRICS_TOKEN is set)",
                "security": [{"metricsToken": []}],
                "responses": {"200": {"description": "Metrics", "content": {"text/plain": {"schema": {
                    "type": "string"}}}}, **_problems("unauthorized", "not_found")}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {
                "description": "OpenAPI 3.1", "content": _json({"type": "object"})}}}},
        },
    }
