"""Operations: liveness, readiness, Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.core import gateway_of
from gateway.errors import HTTPProblem
from gateway.metrics import CONTENT_TYPE
from gateway.openapi import openapi_document
from gateway.routes import json_response
from gateway.schemas import Health, Readiness


async def healthz(request: Request) -> Response:
    return json_response(Health())


async def readyz(request: Request) -> Response:
    gateway = gateway_of(request)
    checks = {"store": await gateway.store.ping()}
    if not checks["store"]:
        return json_response(Readiness("unavailable", checks), 503)
    status = "ready"
    if gateway.settings.redis:
        checks["redis"] = await gateway.limiter.ping()
        # Without Redis the gateway still serves correctly (fail-open limiter), so it stays in rotation: degraded.
        status = "ready" if checks["redis"] else "degraded"
    return json_response(Readiness(status, checks))  # type: ignore[arg-type]


async def metrics(request: Request) -> Response:
    """Prometheus text, for a scraper holding the metrics token (`authorization: {credentials: ...}` in its config):
    it shows every project's traffic, so it is never public."""
    gateway = gateway_of(request)
    expected = gateway.settings.metrics_token
    if not expected:
        raise HTTPProblem("not_found", "metrics are off: set BACKCHANNEL_METRICS_TOKEN to scrape them")
    given = request.headers.get("authorization", "").encode("latin-1")
    if not hmac.compare_digest(given, b"Bearer " + expected.encode()):
        raise HTTPProblem("unauthorized", "send the metrics token: Authorization: Bearer <BACKCHANNEL_METRICS_TOKEN>",
                          {"WWW-Authenticate": 'Bearer realm="metrics"'})
    return Response(gateway.metrics.render(), media_type=CONTENT_TYPE)


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document())
