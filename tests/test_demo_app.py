"""The demo chat app: its fake LLM, A/B assignment, page markup, and trace logging to a stand-in gateway."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from html.parser import HTMLParser

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from demo_app import create_app, llm
from tests.servers import CHROMIUM_ARGS, chromium_executable
from demo_app.app import CHUNK_DELAY, SESSION_COOKIE, chunk_delay

PUBLIC_KEY = "pk_" + "A" * 22
SECRET_KEY = "sk_" + "B" * 43

PROMPTS = [
    "How should I choose a database for a small web app?",
    "Why is my sourdough bread so dense?",
    "What are the tradeoffs between renting and buying a house?",
    "Explain how vaccines train the immune system.",
    "How do I negotiate a higher salary offer?",
    "What causes inflation to rise?",
    "Quarterly revenue grew 12% while churn fell. Marketing spend stayed flat.",
    "Reply to Sam about moving the launch meeting to Thursday",
    "How can our team reduce flaky integration tests?",
    "Which houseplants survive low light apartments?",
    "Compare electric cars and hybrids for commuting.",
    "What should a beginner know about marathon training?",
    "Tell the landlord the heating broke again.",
    "How does compound interest affect retirement savings?",
    "Plan a weekend itinerary for Lisbon.",
    "Why do cats knead blankets?",
]


# --- the fake LLM ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("template", llm.TEMPLATES)
@pytest.mark.parametrize("model", llm.MODELS)
def test_generation_is_deterministic_and_regeneration_differs(template, model):
    prompt = PROMPTS[0]
    first = llm.generate(template, model, prompt, 1)
    assert first and first == llm.generate(template, model, prompt, 1)
    regenerated = [llm.generate(template, model, p, 2) != llm.generate(template, model, p, 1) for p in PROMPTS]
    assert sum(regenerated) >= len(PROMPTS) // 2


def _on_topic(text: str, prompt: str) -> bool:
    return any(word in text.lower() for word in llm.topic_words(prompt))


@pytest.mark.parametrize("template", llm.TEMPLATES)
def test_model_b_is_shorter_and_sometimes_off_topic(template):
    a = [llm.generate(template, "model-a", p, attempt) for p in PROMPTS for attempt in (1, 2)]
    b = [llm.generate(template, "model-b", p, attempt) for p in PROMPTS for attempt in (1, 2)]
    prompts = [p for p in PROMPTS for _ in (1, 2)]

    mean_a = sum(map(len, a)) / len(a)
    mean_b = sum(map(len, b)) / len(b)
    assert mean_b < 0.6 * mean_a, (mean_a, mean_b)

    assert all(_on_topic(text, p) for text, p in zip(a, prompts))
    off_topic = sum(not _on_topic(text, p) for text, p in zip(b, prompts)) / len(b)
    assert 0.1 <= off_topic <= 0.6, off_topic


def test_chunks_rebuild_the_text_in_small_pieces():
    text = llm.generate("draft", "model-a", PROMPTS[7])
    pieces = llm.chunks(text)
    assert "".join(pieces) == text
    assert all(1 <= len(piece.split()) <= 3 for piece in pieces)
    assert 0.5 <= len(pieces) * CHUNK_DELAY <= 2.5  # seconds to stream it at the default pace


def test_ab_assignment_is_sticky_and_even():
    sessions = [f"session-{i}" for i in range(4000)]
    models = [llm.assign_model(s) for s in sessions]
    assert models == [llm.assign_model(s) for s in sessions]
    assert set(models) == set(llm.MODELS)
    assert 0.45 <= models.count("model-a") / len(models) <= 0.55


@pytest.mark.parametrize(("speed", "delay"), [
    (None, CHUNK_DELAY), ("1", CHUNK_DELAY), ("10", CHUNK_DELAY / 10), ("max", 0.0),
    ("0", CHUNK_DELAY), ("-2", CHUNK_DELAY), ("fast", CHUNK_DELAY), ("nan", CHUNK_DELAY),
])
def test_speed_parameter(speed, delay):
    assert chunk_delay(speed) == pytest.approx(delay)


# --- the page --------------------------------------------------------------------------------------------------

class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())]


def _parse(html: str) -> _Tags:
    parser = _Tags()
    parser.feed(html)
    return parser


def _asgi_client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://demo.test")


@pytest.mark.parametrize("widget_src", [None, "http://cdn.test/widget.js?v=3"])
async def test_page_has_exactly_one_widget_script_tag(widget_src):
    app = create_app(gateway_url="http://gw.test/", public_key=PUBLIC_KEY, secret_key=SECRET_KEY,
                     widget_src=widget_src)
    async with _asgi_client(app) as client:
        response = await client.get("/")
    assert response.status_code == 200
    session_id = response.cookies[SESSION_COOKIE]
    page = _parse(response.text)

    widget_tags = [a for t, a in page.tags if t == "script" and "data-project" in a]
    assert len(widget_tags) == 1
    tag = widget_tags[0]
    assert tag["src"] == (widget_src or "http://gw.test/v1/widget.js")
    assert tag["data-project"] == PUBLIC_KEY
    assert tag["data-session-id"] == session_id
    assert "async" in tag
    assert SECRET_KEY not in response.text


async def test_page_has_test_hooks_and_keeps_the_session():
    app = create_app(gateway_url="http://gw.test", public_key=PUBLIC_KEY, secret_key=SECRET_KEY)
    async with _asgi_client(app) as client:
        first = await client.get("/")
        second = await client.get("/")
    session_id = first.cookies[SESSION_COOKIE]
    assert SESSION_COOKIE not in second.cookies
    page = _parse(second.text)
    assert page.find("script", data_session_id=session_id)
    assert page.find("textarea", id="prompt", data_testid="prompt-input")
    assert page.find("select", id="template", data_testid="template-select")
    assert [a["value"] for a in page.find("option")] == list(llm.TEMPLATES)
    assert page.find("button", id="send", data_testid="send-button", type="submit")
    assert page.find("span", data_testid="model-badge")


@pytest.mark.parametrize(("query", "model", "delay"), [
    ("", None, None),
    ("?model=model-b&delay=0", "model-b", "0"),
    ("?model=model-a&delay=60000", "model-a", "60000"),
    ("?model=model-c&delay=60001", None, None),  # unknown variants and out-of-range delays are ignored
    ("?model=&delay=-5", None, None),
    ("?delay=1e3", None, None),
    ("?delay=%D9%A3", None, None),  # a non-ASCII digit
])
async def test_page_can_pin_the_variant_and_the_thumbs_delay(query, model, delay):
    app = create_app(gateway_url="http://gw.test", public_key=PUBLIC_KEY, secret_key=SECRET_KEY)
    async with _asgi_client(app) as client:
        response = await client.get("/" + query)
    assert response.status_code == 200
    session_id = response.cookies[SESSION_COOKIE]
    page = _parse(response.text)
    [app_div] = page.find("div", id="app")
    assert app_div.get("data-pinned-model") == model
    assert app_div["data-model"] == (model or llm.assign_model(session_id))
    [widget] = [a for t, a in page.tags if t == "script" and "data-project" in a]
    assert widget.get("data-delay-ms") == delay


async def test_chat_answers_with_the_pinned_variant_and_rejects_unknown_ones(gateway):
    async with demo_client(gateway.url) as client:
        for model in llm.MODELS:
            async with client.stream("POST", "/api/chat?speed=max",
                                     json={"prompt": PROMPTS[0], "model": model}) as response:
                assert response.status_code == 200
                body = "".join([part async for part in response.aiter_text()])
            assert _parse_sse(body)[0][1]["model"] == model
        bad = await client.post("/api/chat", json={"prompt": PROMPTS[0], "model": "model-c"})
    assert bad.status_code == 400
    assert [t["model"] for t in gateway.traces] == list(llm.MODELS)


async def test_static_assets_and_healthz():
    app = create_app(gateway_url="http://gw.test", public_key=PUBLIC_KEY, secret_key=SECRET_KEY)
    async with _asgi_client(app) as client:
        script = await client.get("/static/chat.js")
        style = await client.get("/static/chat.css")
        health = await client.get("/healthz")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    for attribute in ("data-trace-id", "data-feedback-token", "data-streaming", '"data-feedback-role", "user"',
                      "data-feedback-action", "data-feedback-draft"):
        assert attribute in script.text
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    assert health.status_code == 200 and health.json() == {"status": "ok"}


# --- chatting, with traces logged to a stand-in gateway --------------------------------------------------------

@contextlib.asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    """Run `app` under uvicorn on a free loopback port, in this event loop."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, http="h11", ws="none", lifespan="on", log_config=None,
                                           log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 10
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            assert time.monotonic() < deadline, "uvicorn did not start"
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


class StandInGateway:
    """`POST /v1/traces` as the gateway does it: the bearer secret is checked, the body validated, a token returned."""

    REQUIRED_TEXT = ("trace_id", "session_id", "model", "template", "template_version", "input", "output")

    def __init__(self) -> None:
        self.traces: list[dict] = []
        self.rejected: list[tuple[int, object]] = []
        self.app = Starlette(routes=[Route("/v1/traces", self.post_trace, methods=["POST"])])
        self.url = ""

    async def post_trace(self, request: Request) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {SECRET_KEY}":
            return self._reject(401, "bad secret key")
        if request.headers.get("content-type") != "application/json":
            return self._reject(415, request.headers.get("content-type"))
        body = await request.json()
        missing = [f for f in self.REQUIRED_TEXT if not isinstance(body.get(f), str) or not body[f]]
        attempt = body.get("metadata", {}).get("attempt")
        if missing or not isinstance(attempt, int) or attempt < 1:
            return self._reject(422, {"missing": missing, "attempt": attempt})
        self.traces.append(body)
        receipt = {"trace_id": body["trace_id"], "session_id": body["session_id"],
                   "feedback_token": f"bc1.standin.{body['trace_id']}", "expires_at": 2_000_000_000}
        return JSONResponse(receipt, status_code=201)

    def _reject(self, status: int, why: object) -> JSONResponse:
        self.rejected.append((status, why))
        return JSONResponse({"error": str(why)}, status_code=status)


@pytest.fixture
async def gateway() -> AsyncIterator[StandInGateway]:
    standin = StandInGateway()
    async with serve(standin.app) as url:
        standin.url = url
        yield standin


@contextlib.asynccontextmanager
async def demo_client(gateway_url: str, secret_key: str = SECRET_KEY) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(gateway_url=gateway_url, public_key=PUBLIC_KEY, secret_key=secret_key)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        yield client


def _parse_sse(body: str) -> list[tuple[str, dict]]:
    events = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields["event"], json.loads(fields["data"])))
    return events


async def _chat(client: httpx.AsyncClient, prompt: str, template: str = "answer", attempt: int = 1):
    """The `start` event and the streamed text of one chat turn."""
    async with client.stream("POST", "/api/chat?speed=max",
                             json={"prompt": prompt, "template": template, "attempt": attempt}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = "".join([part async for part in response.aiter_text()])
    events = _parse_sse(body)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and set(kinds[1:-1]) == {"delta"}
    start = events[0][1]
    assert events[-1][1] == {"trace_id": start["trace_id"]}
    return start, "".join(data["text"] for kind, data in events if kind == "delta")


@pytest.mark.parametrize("template", llm.TEMPLATES)
async def test_chat_logs_the_trace_and_streams_its_token(gateway, template):
    prompt = PROMPTS[1]
    async with demo_client(gateway.url) as client:
        start, text = await _chat(client, prompt, template)
        session_id = client.cookies[SESSION_COOKIE]

    assert gateway.rejected == []
    [trace] = gateway.traces
    assert start["trace_id"] == trace["trace_id"]
    assert start["feedback_token"] == f"bc1.standin.{trace['trace_id']}"
    assert trace["output"] == text == llm.generate(template, trace["model"], prompt, 1)
    assert trace["session_id"] == session_id
    assert trace["model"] == start["model"] == llm.assign_model(session_id)
    assert trace["template"] == start["template"] == template
    assert trace["template_version"] == "1"
    assert trace["input"] == prompt
    assert trace["metadata"] == {"attempt": 1}


async def test_regenerate_is_a_new_trace_with_the_next_attempt(gateway):
    async with demo_client(gateway.url) as client:
        first, first_text = await _chat(client, PROMPTS[2])
        second, second_text = await _chat(client, PROMPTS[2], attempt=2)
    assert second["trace_id"] != first["trace_id"]
    assert [t["metadata"]["attempt"] for t in gateway.traces] == [1, 2]
    assert second["attempt"] == 2
    assert [t["output"] for t in gateway.traces] == [first_text, second_text]


async def test_model_assignment_is_sticky_per_session(gateway):
    async with demo_client(gateway.url) as client:
        for prompt in PROMPTS[:3]:
            await _chat(client, prompt)
    async with demo_client(gateway.url) as other_client:
        await _chat(other_client, PROMPTS[0])

    sessions = [t["session_id"] for t in gateway.traces]
    assert sessions[0] == sessions[1] == sessions[2] != sessions[3]
    models = {t["session_id"]: t["model"] for t in gateway.traces}
    assert len({t["model"] for t in gateway.traces[:3]}) == 1
    assert all(model == llm.assign_model(session) for session, model in models.items())


@pytest.mark.parametrize("failure", ["unreachable", "wrong secret"])
async def test_user_still_gets_the_answer_when_the_gateway_fails(gateway, caplog, failure):
    if failure == "unreachable":
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            gateway_url, secret_key = f"http://127.0.0.1:{sock.getsockname()[1]}", SECRET_KEY
    else:
        gateway_url, secret_key = gateway.url, "sk_" + "C" * 43

    with caplog.at_level(logging.WARNING, logger="demo_app"):
        async with demo_client(gateway_url, secret_key) as client:
            start, text = await _chat(client, PROMPTS[3])

    assert start["feedback_token"] is None
    assert text == llm.generate("answer", start["model"], PROMPTS[3], 1)
    assert any(start["trace_id"] in record.getMessage() for record in caplog.records)
    assert gateway.traces == []


@pytest.mark.parametrize("body", [
    {"prompt": "", "template": "answer"},
    {"prompt": "   ", "template": "answer"},
    {"prompt": "hello", "template": "poem"},
    {"prompt": "hello", "attempt": 0},
    {"template": "answer"},
    "not an object",
])
async def test_bad_chat_requests_are_rejected(gateway, body):
    async with demo_client(gateway.url) as client:
        response = await client.post("/api/chat", json=body)
    assert response.status_code == 400
    assert "error" in response.json()
    assert gateway.traces == []


async def test_default_pace_spreads_the_chunks_over_time(gateway):
    async with demo_client(gateway.url) as client:
        arrivals, body = [], b""
        async with client.stream("POST", "/api/chat?speed=2", json={"prompt": PROMPTS[0]}) as response:
            async for part in response.aiter_raw():
                arrivals.append(time.monotonic())
                body += part
    deltas = [kind for kind, _ in _parse_sse(body.decode()) if kind == "delta"]
    assert len(arrivals) >= len(deltas) // 2
    assert arrivals[-1] - arrivals[0] >= 0.8 * (len(deltas) - 1) * CHUNK_DELAY / 2


# --- the markup, in a real browser -------------------------------------------------------------------------------

@pytest.mark.e2e
async def test_messages_are_marked_up_per_the_widget_contract(gateway):
    from playwright import async_api as playwright_api
    app = create_app(gateway_url=gateway.url, public_key=PUBLIC_KEY, secret_key=SECRET_KEY,
                     widget_src="/static/absent-widget.js")  # the markup alone, without the widget
    async with serve(app) as url, playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_executable(), args=CHROMIUM_ARGS)
        page = await browser.new_page()
        await page.goto(url + "/?speed=4")
        assert await page.locator("script[data-project]").count() == 1

        # Recorded in the page as it happens: at speed 4 an answer may stream for less time than a locator polls.
        await page.evaluate("""() => { window.sawStreaming = false; new MutationObserver(() => {
            window.sawStreaming ||= document.querySelector('[data-trace-id][data-streaming=true]') !== null;
        }).observe(document.body, {subtree: true, childList: true, attributes: true}); }""")
        await page.fill("#prompt", PROMPTS[0])
        await page.click("#send")
        first = page.locator("[data-trace-id][data-streaming=false]")
        await first.wait_for()
        assert await page.evaluate("window.sawStreaming")  # marked streaming while it streamed
        [trace] = gateway.traces
        assert await first.get_attribute("data-trace-id") == trace["trace_id"]
        assert await first.get_attribute("data-feedback-token") == f"bc1.standin.{trace['trace_id']}"
        assert await first.locator("[data-testid=assistant-text]").text_content() == trace["output"]
        assert await page.locator("[data-feedback-role=user]").text_content() == PROMPTS[0]
        assert await first.locator("[data-feedback-action=copy]").count() == 1

        await first.locator("[data-feedback-action=regenerate]").click()
        second = page.locator("[data-trace-id][data-streaming=false]").nth(1)
        await second.wait_for()
        assert await second.get_attribute("data-trace-id") == gateway.traces[1]["trace_id"]
        assert gateway.traces[1]["metadata"] == {"attempt": 2}
        assert await page.locator("[data-feedback-role=user]").count() == 1

        await page.select_option("#template", "draft")
        await page.fill("#prompt", PROMPTS[7])
        await page.press("#prompt", "Enter")
        await page.locator("[data-trace-id][data-streaming=false]").nth(2).wait_for()
        draft_trace = gateway.traces[2]
        draft = page.locator(f"textarea[data-feedback-draft='{draft_trace['trace_id']}']")
        assert await draft.input_value() == draft_trace["output"]
        await browser.close()
