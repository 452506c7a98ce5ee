"""The gateway application: its routes, error handlers and lifespan, around the running state (`gateway/core.py`)."""

from __future__ import annotations

import contextlib
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.core import Gateway
from gateway.errors import HTTPProblem, problem_response
from gateway.fastpath import EVENTS_PATH, GatewayApp
from gateway.pages.review import review_routes
from gateway.routes import (
    alerts, dashboard, destinations, events, exports, labels, ops, projects, queues, stats, traces,
)
from gateway.settings import Settings
from gateway.store import StoreUnavailable


async def _problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPProblem)
    return problem_response(exc.code, exc.detail, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    if code is None:
        return Response(exc.detail, status_code=exc.status_code, headers=exc.headers)
    return problem_response(code, f"{request.method} {request.url.path}: {exc.detail}", exc.headers)


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    # Any route's write the store could not commit (its files replaced, the disk full, the writer gone): nothing of
    # it was stored, so the client may retry, as on the events route.
    return problem_response("store_unavailable", "the store could not commit; nothing was stored, retry",
                            {"Retry-After": "1"})


def create_app(settings: Settings | None = None) -> Starlette:
    from widget.routes import routes as widget_routes

    settings = settings or Settings.load()
    gateway = Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    events_endpoint = events.EventsEndpoint(gateway)
    routes = [
        Route(EVENTS_PATH, events_endpoint, methods=["POST"]),  # reached this way only under a root path
        Route(EVENTS_PATH, events.preflight, methods=["OPTIONS"]),
        Route("/v1/traces", traces.post_trace, methods=["POST"]),
        *destinations.routes,
        Route("/v1/traces/{trace_id:path}", traces.get_trace, methods=["GET"]),
        Route("/v1/projects/{public_key}/config", projects.project_config, methods=["GET"]),
        *queues.routes, *labels.routes, *exports.routes, *review_routes(gateway),
        Route("/v1/stats", stats.get_stats, methods=["GET"]),
        Route("/v1/alerts", alerts.get_alerts, methods=["GET"]),
        *dashboard.routes(gateway),
        Route("/healthz", ops.healthz, methods=["GET"]),
        Route("/readyz", ops.readyz, methods=["GET"]),
        Route("/metrics", ops.metrics, methods=["GET"]),
        Route("/openapi.json", ops.openapi, methods=["GET"]),
        *widget_routes,
    ]
    app = GatewayApp(events_endpoint=events_endpoint, routes=routes, lifespan=lifespan,
                     exception_handlers={HTTPProblem: _problem, HTTPException: _http_error,
                                         StoreUnavailable: _store_unavailable})
    app.state.gateway = gateway
    return app
