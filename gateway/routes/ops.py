"""Operations: liveness, readiness, Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.core import gateway_of
from gateway.metrics import CONTENT_TYPE
from gateway.openapi import openapi_document


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    gateway = gateway_of(request)
    checks = {"store": await gateway.store.ping()}
    if not checks["store"]:
        return JSONResponse({"status": "unavailable", "checks": checks}, status_code=503)
    status = "ready"
    if gateway.settings.redis:
        checks["redis"] = await gateway.limiter.ping()
        # Without Redis the gateway still serves correctly (fail-open limiter), so it stays in rotation: degraded.
        status = "ready" if checks["redis"] else "degraded"
    return JSONResponse({"status": status, "checks": checks})


async def metrics(request: Request) -> Response:
    return Response(gateway_of(request).metrics.render(), media_type=CONTENT_TYPE)


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document())
