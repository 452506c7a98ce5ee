"""The gateway application: routes, the shared state they use, and its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway import tokens
from gateway.directory import Directory
from gateway.errors import HTTPProblem, problem_response
from gateway.metrics import Metrics
from gateway.ratelimit import Limiter, Rate, create_limiter
from gateway.routes import events, ops, projects, traces
from gateway.schemas import MAX_EVENTS_PER_REQUEST
from gateway.settings import Settings
from gateway.store.sqlite import SQLiteStore

log = logging.getLogger("backchannel")


@dataclass(frozen=True)
class Rates:
    session: Rate
    ip: Rate
    project: Rate

    @classmethod
    def from_settings(cls, settings: Settings) -> Rates:
        rates = cls(Rate.parse(settings.limit_session), Rate.parse(settings.limit_ip),
                    Rate.parse(settings.limit_project))
        for name in ("session", "ip", "project"):
            # A request costs one per event; a bucket shallower than the largest request would refuse it forever.
            if getattr(rates, name).burst < MAX_EVENTS_PER_REQUEST:
                raise ValueError(f"BACKCHANNEL_LIMIT_{name.upper()} needs a burst of at least "
                                 f"{MAX_EVENTS_PER_REQUEST} (the most events one request may carry), e.g. "
                                 f"'{getattr(settings, 'limit_' + name)} burst {MAX_EVENTS_PER_REQUEST}'")
        return rates


class Gateway:
    """What the routes share: settings, store, limiter, the key directory and metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rates = Rates.from_settings(settings)  # fails fast on a bad limit setting
        self.metrics = Metrics()
        self.store = SQLiteStore(settings.db, synchronous=settings.sqlite_synchronous,
                                 busy_timeout_ms=settings.sqlite_busy_timeout_ms,
                                 max_batch=settings.commit_max_batch, on_commit=self.metrics.observe_commit)
        self.directory = Directory(self.store)
        self.limiter: Limiter = create_limiter(settings.redis or None,
                                               redis_timeout=settings.redis_timeout_ms / 1000)
        self.tokens = tokens.Verifier()
        self.ip_salt = settings.ip_salt
        self._to_remember: list[str] = []
        self._remembering: asyncio.Task | None = None
        for name in ("redis_errors", "fail_open"):
            self.metrics.gauges[f"limiter_{name}_total"] = lambda name=name: self.limiter.stats.get(name, 0)

    @staticmethod
    def today() -> int:
        return int(time.time() // 86400)

    def remember_later(self, ids: list[str]) -> None:
        """Tell the limiter's de-dup fast path about committed ids, off the request's critical path, in batches."""
        self._to_remember.extend(ids)
        if self._to_remember and (self._remembering is None or self._remembering.done()):
            self._remembering = asyncio.create_task(self._remember())

    async def _remember(self) -> None:
        await asyncio.sleep(0)  # let the other requests answered by the same commit add theirs
        while self._to_remember:
            ids, self._to_remember = self._to_remember, []
            await self.limiter.remember(ids)

    async def start(self) -> None:
        await self.store.open()
        if not self.ip_salt:
            self.ip_salt = await self.store.meta("ip_salt", secrets.token_hex(16))

    async def stop(self) -> None:
        if self._remembering is not None:
            await asyncio.gather(self._remembering, return_exceptions=True)
        await self.store.close()
        await self.limiter.aclose()


async def _problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPProblem)
    return problem_response(exc.code, exc.detail, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    if code is None:
        return Response(exc.detail, status_code=exc.status_code, headers=exc.headers)
    return problem_response(code, f"{request.method} {request.url.path}: {exc.detail}", exc.headers)


class GatewayApp(Starlette):
    """Starlette, except that `POST /v1/events` (nearly all the traffic) goes straight to its endpoint, past the
    middleware and the router: on a 1-event request they cost about as much as the gateway's own checks."""

    def __init__(self, *, events_endpoint: events.EventsEndpoint, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._events = events_endpoint

    # A coroutine function on purpose: uvicorn tells ASGI 3 from ASGI 2 by it (a plain method returning the endpoint's
    # coroutine would save a frame, and get the app run as ASGI 2).
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/v1/events":
            await self._events(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


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
        Route("/v1/events", events_endpoint, methods=["POST"]),  # reached this way only under a root path
        Route("/v1/events", events.preflight, methods=["OPTIONS"]),
        Route("/v1/traces", traces.post_trace, methods=["POST"]),
        Route("/v1/traces/{trace_id:path}", traces.get_trace, methods=["GET"]),
        Route("/v1/projects/{public_key}/config", projects.project_config, methods=["GET"]),
        Route("/healthz", ops.healthz, methods=["GET"]),
        Route("/readyz", ops.readyz, methods=["GET"]),
        Route("/metrics", ops.metrics, methods=["GET"]),
        Route("/openapi.json", ops.openapi, methods=["GET"]),
        *widget_routes,
    ]
    app = GatewayApp(events_endpoint=events_endpoint, routes=routes, lifespan=lifespan,
                     exception_handlers={HTTPProblem: _problem, HTTPException: _http_error})
    app.state.gateway = gateway
    return app
