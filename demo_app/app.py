"""The demo chat app: a page that carries the widget's script tag, and a streaming chat endpoint.

`GET /` takes `?model=model-a|model-b` (pin the A/B variant instead of the session's), `?delay=MS` (the widget's
`data-delay-ms`: how long after an answer its thumbs appear) and `?speed=` (how fast answers stream; see `chunk_delay`),
so a test can choose the variant and skip the waits. Values it does not know are ignored.

`POST /api/chat` (body: prompt, template, attempt, model) answers with server-sent events:
    event: start  data: {"trace_id", "feedback_token" (null if the gateway was unreachable), "model", "template", "attempt"}
    event: delta  data: {"text"}   (repeated; the deltas joined are the whole answer)
    event: done   data: {"trace_id"}
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import string
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from demo_app import llm
from demo_app.traces import Trace, TraceLogger
from gateway.client import AsyncBackchannel

HERE = Path(__file__).parent
SESSION_COOKIE = "bc_demo_session"
CHUNK_DELAY = 0.03  # seconds between streamed chunks at speed 1: a model-a answer takes about 1.5 s
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
MAX_DELAY_MS = 60_000


class ChatRequest(msgspec.Struct):
    prompt: Annotated[str, msgspec.Meta(min_length=1, max_length=8000)]
    template: Literal["answer", "summarize", "draft"] = "answer"
    attempt: Annotated[int, msgspec.Meta(ge=1, le=100)] = 1
    model: Literal["model-a", "model-b"] | None = None  # pinned by the page's ?model=; else the session's variant
    parent_trace_id: Annotated[str, msgspec.Meta(max_length=200)] | None = None  # set by Regenerate


def chunk_delay(speed: str | None) -> float:
    """The pause between chunks for `?speed=`: N (> 0) streams N times faster, `max` streams without pauses."""
    if speed == "max":
        return 0.0
    try:
        factor = float(speed) if speed is not None else 1.0
    except ValueError:
        return CHUNK_DELAY
    return CHUNK_DELAY / factor if factor > 0 else CHUNK_DELAY


def pinned_model(value: str | None) -> str | None:
    return value if value in llm.MODELS else None


def delay_ms(value: str | None) -> int | None:
    """`?delay=MS` as the widget's data-delay-ms: whole milliseconds from 0 to a minute, else None (the project's)."""
    if value is None or not value.isascii() or not value.isdigit() or int(value) > MAX_DELAY_MS:
        return None
    return int(value)


def create_app(*, gateway_url: str, public_key: str, secret_key: str, widget_src: str | None = None) -> Starlette:
    gateway_url = gateway_url.rstrip("/")
    widget_src = widget_src or f"{gateway_url}/v1/widget.js"
    page = string.Template((HERE / "templates" / "index.html").read_text())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # One retry: the chat answers either way, and a user should not wait on a gateway that is down.
        async with AsyncBackchannel(secret_key, gateway_url, timeout=5.0, max_retries=1) as client:
            app.state.traces = TraceLogger(client)
            yield

    async def index(request: Request) -> Response:
        session_id, is_new = _session_id(request)
        model = pinned_model(request.query_params.get("model"))
        delay = delay_ms(request.query_params.get("delay"))
        body = page.substitute(
            widget_src=html.escape(widget_src),
            public_key=html.escape(public_key),
            session_id=html.escape(session_id),
            model=html.escape(model or llm.assign_model(session_id)),
            pinned=f' data-pinned-model="{model}"' if model else "",
            delay=f' data-delay-ms="{delay}"' if delay is not None else "",
        )
        response = HTMLResponse(body, headers={"Cache-Control": "no-store"})
        if is_new:
            _set_session_cookie(response, session_id)
        return response

    async def chat(request: Request) -> Response:
        try:
            ask = msgspec.json.decode(await request.body(), type=ChatRequest)
        except msgspec.DecodeError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if not ask.prompt.strip():
            return JSONResponse({"error": "prompt is empty"}, status_code=400)

        session_id, is_new = _session_id(request)
        model = ask.model or llm.assign_model(session_id)
        text = llm.generate(ask.template, model, ask.prompt, ask.attempt)
        trace_id = str(uuid.uuid4())
        token = await request.app.state.traces.log(Trace(
            trace_id=trace_id, session_id=session_id, model=model, template=ask.template,
            template_version=llm.TEMPLATE_VERSION, input=ask.prompt, output=text, metadata={"attempt": ask.attempt},
            parent_trace_id=ask.parent_trace_id,
        ))
        delay = chunk_delay(request.query_params.get("speed"))

        async def events() -> AsyncIterator[bytes]:
            yield _sse("start", {"trace_id": trace_id, "feedback_token": token, "model": model,
                                 "template": ask.template, "attempt": ask.attempt})
            for chunk in llm.chunks(text):
                if delay:
                    await asyncio.sleep(delay)
                yield _sse("delta", {"text": chunk})
            yield _sse("done", {"trace_id": trace_id})

        response = StreamingResponse(events(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        if is_new:
            _set_session_cookie(response, session_id)
        return response

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/chat", chat, methods=["POST"]),
            Route("/healthz", healthz),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        lifespan=lifespan,
    )


def _session_id(request: Request) -> tuple[str, bool]:
    """The demo session from the cookie, or a new one (True when the cookie still has to be set)."""
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if _SESSION_ID.fullmatch(cookie):
        return cookie, False
    return uuid.uuid4().hex, True


def _set_session_cookie(response: Response, session_id: str) -> None:
    response.set_cookie(SESSION_COOKIE, session_id, max_age=30 * 24 * 3600, httponly=True, samesite="lax")


def _sse(event: str, data: dict[str, object]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"
