"""The OpenAPI 3.1 document, generated from the msgspec Structs in `schemas.py`."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

import msgspec

from gateway import __version__
from gateway.errors import ERRORS
from gateway.schemas import (
    DEFAULT_EVENTS_PAGE, MAX_EVENTS_PAGE, MAX_EVENTS_PER_REQUEST, Event, EventResults, Problem, ProjectConfig,
    PublicKey, TraceCreated, TraceIn, TraceOut,
)


class EventBatchDoc(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /v1/events` body. Each event is validated on its own: a bad one is rejected, its neighbours go on."""

    project: PublicKey
    events: Annotated[list[Event], msgspec.Meta(max_length=MAX_EVENTS_PER_REQUEST)]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(name)}}


def _problems(*codes: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for code in codes:
        status, title = ERRORS[code]
        entry = out.setdefault(str(status), {"description": "", "content": {"application/problem+json": {
            "schema": _ref("Problem")}}})
        entry["description"] = "; ".join(filter(None, [entry["description"], f"`{code}`: {title}"]))
    return out


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    (batch, results, trace_in, created, trace_out, config, problem), components = msgspec.json.schema_components(
        [EventBatchDoc, EventResults, TraceIn, TraceCreated, TraceOut, ProjectConfig, Problem],
        ref_template="#/components/schemas/{name}",
    )
    secret = [{"secretKey": []}]
    event_errors = sorted(code for code, (status, _) in ERRORS.items() if status is None)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Backchannel gateway", "version": __version__,
                 "description": "Per-event error codes: " + ", ".join(f"`{c}`" for c in event_errors)},
        "components": {
            "schemas": components,
            "securitySchemes": {"secretKey": {"type": "http", "scheme": "bearer", "description": "sk_... secret key"},
                                "metricsToken": {"type": "http", "scheme": "bearer",
                                                 "description": "BACKCHANNEL_METRICS_TOKEN"}},
        },
        "paths": {
            "/v1/events": {"post": {
                "summary": "Send feedback events from the browser",
                "parameters": [{"name": "project", "in": "query", "required": False, "schema": {"type": "string"},
                                "description": "Public key, so the CORS preflight can be answered per project"}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": batch},
                                                              "text/plain": {"schema": batch}}},
                "responses": {"200": {"description": "One result per event, in request order",
                                      "content": {"application/json": {"schema": results}}},
                              **_problems("malformed", "unknown_project", "origin_not_allowed", "request_timeout",
                                          "too_large", "unsupported_media_type", "rate_limited",
                                          "store_unavailable")},
            }},
            "/v1/traces": {"post": {
                "summary": "Log a generation; returns the feedback token to embed beside it",
                "security": secret,
                "requestBody": {"required": True, "content": {"application/json": {"schema": trace_in}}},
                "responses": {"201": {"description": "Created", "content": {"application/json": {"schema": created}}},
                              "200": {"description": "Updated", "content": {"application/json": {"schema": created}}},
                              **_problems("malformed", "unauthorized", "request_timeout", "too_large",
                                          "unsupported_media_type", "store_unavailable")},
            }},
            "/v1/traces/{trace_id}": {"get": {
                "summary": "A trace with a page of its event log, and its current votes and signals (whole)",
                "security": secret,
                "parameters": [
                    {"name": "trace_id", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_EVENTS_PAGE,
                                "default": DEFAULT_EVENTS_PAGE}, "description": "Most events in this page"},
                    {"name": "after", "in": "query", "required": False, "schema": {"type": "string"},
                     "description": "The previous page's `next_after`: this page starts after that event"}],
                "responses": {"200": {"description": "The trace",
                                      "content": {"application/json": {"schema": trace_out}}},
                              **_problems("invalid_parameter", "unauthorized", "not_found")},
            }},
            "/v1/projects/{public_key}/config": {"get": {
                "summary": "Widget configuration (public)",
                "parameters": [{"name": "public_key", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "Config", "content": {"application/json": {"schema": config}}},
                              **_problems("not_found")},
            }},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "Alive"}}}},
            "/readyz": {"get": {"summary": "Readiness: store and Redis", "responses": {
                "200": {"description": "Ready"}, "503": {"description": "Not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (off until BACKCHANNEL_METRICS_TOKEN is set)",
                                 "security": [{"metricsToken": []}],
                                 "responses": {"200": {"description": "Metrics"},
                                               **_problems("unauthorized", "not_found")}}},
        },
    }
