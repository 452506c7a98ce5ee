"""The real gateway app for widget tests in a browser: a uvicorn thread that also serves test pages.

`WidgetSite` runs `gateway.app.create_app` on a temporary SQLite store behind `Recorder`, a thin ASGI layer that
records every `/v1/events` request the widget sends (method, content type, query, body, status and answer; Plausible's way of
testing a tracker) and can answer the next ones from a plan (429, 503, 4xx) before they reach the gateway. Pages are
served at http://127.0.0.1:PORT/page/NAME and the widget at http://localhost:PORT, so every widget request is
cross-origin and goes through the gateway's real CORS, origin, token and trace checks.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.responses import HTMLResponse

from gateway.app import create_app
from gateway.errors import problem_response
from gateway.routes.events import cors_headers
from gateway.settings import Settings
from tests.servers import free_port, wait_for

# What a planned answer says, as the gateway would say it.
PLANNED_CODES = {400: "malformed", 401: "unknown_project", 403: "origin_not_allowed", 413: "too_large",
                 429: "rate_limited", 503: "store_unavailable"}


class Recorder:
    """ASGI middleware in front of the gateway: records `/v1/events` requests; answers them from `plan` first."""

    def __init__(self, app: Any, site: WidgetSite) -> None:
        self.app = app
        self.site = site

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            self.site.loop = asyncio.get_running_loop()
            return await self.app(scope, receive, send)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"].startswith("/page/"):
            page = self.site.pages[scope["path"].removeprefix("/page/")]
            return await HTMLResponse(page, headers={"Cache-Control": "no-store"})(scope, receive, send)
        if scope["path"] != "/v1/events":
            return await self.app(scope, receive, send)

        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        body = b"".join(chunks)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        record: dict[str, Any] = {
            "at": time.time(), "method": scope["method"], "content_type": headers.get("content-type"),
            "query": dict(httpx.QueryParams(scope["query_string"].decode())), "body": body.decode(), "status": None,
            "answer": "",
        }
        recorded = self.site.records(headers.get("referer", ""))
        if recorded:
            self.site.requests.append(record)
        if recorded and scope["method"] == "POST" and self.site.plan:
            status, extra = self.site.plan.pop(0)
            record["status"] = status
            answer = problem_response(PLANNED_CODES[status], "planned by the test",
                                      {**cors_headers(headers.get("origin")), **extra})
            return await answer(scope, receive, send)

        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def observe(message: dict) -> None:
            if message["type"] == "http.response.start":
                record["status"] = message["status"]
            else:
                record["answer"] += message.get("body", b"").decode()
            await send(message)

        await self.app(scope, replay, observe)


class WidgetSite:
    """The real gateway (temp SQLite, real settings) plus test pages, served by uvicorn in a thread."""

    def __init__(self, db: Path, **settings: Any) -> None:
        self.db = db
        self.port = free_port()
        self.app = create_app(Settings.load(environ={}, db=str(db), **settings))
        self.pages: dict[str, str] = {}
        self.requests: list[dict] = []  # recorded /v1/events requests
        self.plan: list[tuple[int, dict[str, str]]] = []  # answers for the next POSTs, before the gateway sees them
        self.record_referer = ""  # record only requests from pages whose URL contains this ("" records all)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server = uvicorn.Server(uvicorn.Config(Recorder(self.app, self), host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on", ws="none"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def start(self) -> WidgetSite:
        self.thread.start()
        wait_for(lambda: self.server.started, what="the gateway to start")
        return self

    def stop(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(15)

    def records(self, referer: str) -> bool:
        return referer.startswith(self.origin + "/page/" + self.record_referer)

    @property
    def origin(self) -> str:
        """Where pages live."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        """Where the widget and the gateway live: another origin than the pages'."""
        return f"http://localhost:{self.port}"

    @property
    def widget_src(self) -> str:
        return self.endpoint + "/v1/widget.js"

    def url(self, name: str) -> str:
        return f"{self.origin}/page/{name}"

    def create_project(self, *, require_token: bool = True) -> tuple[str, str]:
        """A project allowing the pages' origin; returns (public key, secret key)."""
        assert self.loop is not None
        coro = self.app.state.gateway.store.create_project(name="widget-test", origins=[self.origin],
                                                           require_token=require_token)
        project, secret = asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)
        return project.public_key, secret

    def log_trace(self, secret: str, trace_id: str, session_id: str) -> str:
        """`POST /v1/traces` as an app's backend does; returns the real feedback token."""
        r = self.http.post("/v1/traces", json={"trace_id": trace_id, "session_id": session_id},
                           headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code in (200, 201), r.text
        return r.json()["feedback_token"]

    def stored(self, secret: str, trace_id: str) -> dict:
        """What the gateway stored for a trace: `GET /v1/traces/{id}`."""
        r = self.http.get(f"/v1/traces/{trace_id}", headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code == 200, r.text
        return r.json()

    def delivered(self) -> list[dict]:
        """Events from recorded requests answered 200, in arrival order."""
        return [e for r in list(self.requests) if r["status"] == 200 for e in json.loads(r["body"])["events"]]

    def db_bytes(self) -> bytes:
        """Every byte of the SQLite store: the database, its WAL and shared-memory files."""
        return b"".join(p.read_bytes() for p in self.db.parent.glob(self.db.name + "*"))
