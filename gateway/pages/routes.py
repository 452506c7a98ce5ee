"""The dashboard's routes: `/dashboard` (sign-in form or the dashboard), sign-in and sign-out, static files.

`dashboard_routes` takes what it needs from the gateway as callables, so `app.py` mounts it in a few lines and tests
mount it with their own data. The helpers here (`page_response`, `same_origin`, `read_form`, `SignIn`) are what the
reviewer page reuses for its own `/review` sign-in with a reviewer key.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import BaseRoute, Route, request_response

from gateway.errors import HTTPProblem
from gateway.pages.dashboard import Filters, render_dashboard
from gateway.pages.session import Kind, Principal, Sessions
from gateway.pages.static import URL_PATH as STATIC_PATH
from gateway.pages.static import static_file
from gateway.pages.templates import render
from gateway.ratelimit import Limit, Limiter, Rate
from gateway.ratelimit.memory import MemoryLimiter

PAGE = "/dashboard"
MAX_FORM_BYTES = 4096
MAX_KEY_CHARS = 200
SIGN_IN_RATE = Rate.parse("10/min burst 10")  # per client IP: a person mistypes a few times, a guesser is slowed
CSP = ("default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; "
       "base-uri 'none'; frame-ancestors 'none'")
PAGE_HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-store", "Vary": "Cookie",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}

Authenticate = Callable[[str], Awaitable[Principal | None]]
IsLive = Callable[[Principal], Awaitable[bool]]
Fetch = Callable[[int, dict[str, str]], Awaitable[Mapping[str, Any]]]


def page_response(template: str, status: int = 200, headers: Mapping[str, str] | None = None,
                  **context: Any) -> HTMLResponse:
    """A page rendered from `template` with the pages' security headers (CSP without inline script or style)."""
    return HTMLResponse(render(template, **context), status_code=status, headers={**PAGE_HEADERS, **(headers or {})})


def same_origin(request: Request) -> bool:
    """Whether a form POST comes from a page of this host (CSRF): `Origin`, else `Referer`, must name our host."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return False
    parts = urlsplit(source)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == request.headers.get("host", "").lower()


async def read_form(request: Request) -> dict[str, str] | None:
    """A small `application/x-www-form-urlencoded` body as a dict (first value per name), or None if it is not one."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=10)
    except ValueError:  # not UTF-8, or too many fields
        return None
    return {name: values[0] for name, values in fields.items()}


@dataclass(frozen=True)
class SignIn:
    """Signing in to one page with one kind of key: the form, the exchange for a cookie, and signing out."""

    page: str  # the page's path, e.g. "/dashboard"
    page_title: str
    kind: Kind
    key_label: str  # the field's label, e.g. "Secret key"
    key_prefix: str  # e.g. "sk_"
    authenticate: Authenticate
    is_live: IsLive
    cookie_key: Callable[[], bytes]
    limiter: Limiter
    client_ip: Callable[[Request], str] = lambda request: request.client.host if request.client else "unknown"
    rate: Rate = SIGN_IN_RATE

    def sessions(self) -> Sessions:
        return Sessions(self.cookie_key(), is_live=self.is_live, name=f"bc_{self.page.strip('/')}", path=self.page)

    async def principal(self, request: Request) -> Principal | None:
        sessions = self.sessions()
        return await sessions.verify(request.cookies.get(sessions.name), kinds=(self.kind,))

    def signed_out(self, request: Request) -> HTMLResponse:
        """The sign-in form, dropping a cookie that no longer signs in (expired, revoked, forged)."""
        response = self.form()
        if self.sessions().name in request.cookies:
            self.sessions().clear_cookie(response, secure=request.url.scheme == "https")
        return response

    def form(self, status: int = 200, error: str = "", headers: Mapping[str, str] | None = None) -> HTMLResponse:
        return page_response("sign_in.html", status, headers, page_title=self.page_title,
                             action=f"{self.page}/sign-in", key_label=self.key_label, key_prefix=self.key_prefix,
                             error=error, sign_out_action="", signed_in_as="")

    def refused(self) -> HTMLResponse:
        return page_response("message.html", 403, page_title=self.page_title, heading="Form refused",
                             message="This form has to be sent from the page itself (its Origin did not match).",
                             back=self.page, sign_out_action="", signed_in_as="")

    async def sign_in(self, request: Request) -> Response:
        if not same_origin(request):
            return self.refused()
        check = await self.limiter.check([Limit(f"sign-in:{self.page}:{self.client_ip(request)}", self.rate)])
        if not check.allowed:
            wait = max(1, round(check.retry_after))
            return self.form(429, f"Too many attempts: try again in {wait} seconds.", {"Retry-After": str(wait)})
        form = await read_form(request)
        if form is None:
            return self.form(400, "The form could not be read: send it from this page.")
        key = form.get("key", "").strip()
        if not key:
            return self.form(400, f"Enter the {self.key_label.lower()}.")
        if len(key) > MAX_KEY_CHARS or not key.startswith(self.key_prefix):
            return self.form(400, f"That is not a {self.key_label.lower()}: it starts with {self.key_prefix}.")
        principal = await self.authenticate(key)
        if principal is None or principal.kind != self.kind:
            return self.form(401, f"Unknown or revoked {self.key_label.lower()}.")
        response = RedirectResponse(self.page, status_code=303, headers={"Cache-Control": "no-store"})
        self.sessions().set_cookie(response, principal, secure=request.url.scheme == "https")
        return response

    async def sign_out(self, request: Request) -> Response:
        if not same_origin(request):
            return self.refused()
        response = RedirectResponse(self.page, status_code=303, headers={"Cache-Control": "no-store"})
        self.sessions().clear_cookie(response, secure=request.url.scheme == "https")
        return response


def dashboard_routes(*, authenticate: Authenticate, is_live: IsLive, fetch_stats: Fetch, fetch_alerts: Fetch,
                     cookie_key: Callable[[], bytes], limiter: Limiter | None = None,
                     client_ip: Callable[[Request], str] | None = None,
                     clock: Callable[[], float] = time.time) -> list[BaseRoute]:
    """Routes for `/dashboard`, its sign-in and sign-out, and the pages' static files.

    - `authenticate(secret_key)`: the `Principal("secret", project_id, key_id)` of a live secret key, else None.
    - `is_live(principal)`: whether that key still works (checked on every page view: revoking signs out).
    - `fetch_stats(project_id, query)`: the `/v1/stats` answer for that query (a dict of its query parameters).
    - `fetch_alerts(project_id, query)`: the `/v1/alerts` answer (query `{"state": "all"}`).
      Either may raise `HTTPProblem`: the page then shows its detail instead of the data.
    - `cookie_key()`: the server's session-signing key (>= 16 bytes), read per request so it may be loaded at start-up.
    - `limiter`: charges sign-in attempts per client (default: in-process); `client_ip(request)` names the client's
      bucket (default: the peer address; behind proxies, the gateway's own client-IP rule).
    """
    sign_in = SignIn(PAGE, "Dashboard", "secret", "Secret key", "sk_", authenticate, is_live, cookie_key,
                     limiter or MemoryLimiter(), **({"client_ip": client_ip} if client_ip else {}))

    async def dashboard(request: Request) -> Response:
        principal = await sign_in.principal(request)
        if principal is None:
            return sign_in.signed_out(request)
        filters, errors = Filters.parse(request.query_params)
        now = clock()
        problem = ""
        try:
            stats = await fetch_stats(principal.project_id, filters.stats_query(now))
            alerts = await fetch_alerts(principal.project_id, filters.alerts_query())
        except HTTPProblem as exc:
            stats, alerts, problem = {}, {}, exc.detail
        html = render_dashboard(stats, alerts, filters, now=now, errors=errors, problem=problem, page_path=PAGE,
                                sign_out_action=f"{PAGE}/sign-out", signed_in_as=f"Project {principal.project_id}")
        return HTMLResponse(html, status_code=400 if errors or problem else 200, headers=PAGE_HEADERS)

    return [
        # Compressed: a page of hourly lines is a few hundred KB of SVG paths (about a third when gzipped).
        Route(PAGE, GZipMiddleware(request_response(dashboard)), methods=["GET"]),
        Route(f"{PAGE}/sign-in", sign_in.sign_in, methods=["POST"]),
        Route(f"{PAGE}/sign-out", sign_in.sign_out, methods=["POST"]),
        Route(STATIC_PATH + "/{name}", static_file, methods=["GET"]),
    ]
