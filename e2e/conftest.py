"""End-to-end fixtures: `backchannel demo` (gateway + demo app, real uvicorn, real Redis) and a real Chromium.

Tests assert on what the gateway stored (`stack.wait_trace`), not only on the page.
"""

from __future__ import annotations

import functools
import json
import os
import selectors
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page
from playwright.sync_api import Error as PlaywrightError

from tests.servers import free_port

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.e2e)


class Stack:
    """The running demo: URLs, keys, and the gateway's server API."""

    def __init__(self, info: dict[str, str], db: str) -> None:
        self.gateway_url = info["gateway_url"]
        self.demo_url = info["demo_url"].rstrip("/")
        self.public_key = info["public_key"]
        self.secret_key = info["secret_key"]
        self.db = db

    def api(self, secret_key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.gateway_url, timeout=5,
                            headers={"Authorization": f"Bearer {secret_key or self.secret_key}"})

    def trace(self, trace_id: str, secret_key: str | None = None) -> dict[str, Any] | None:
        with self.api(secret_key) as api:
            response = api.get(f"/v1/traces/{trace_id}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def wait_trace(self, trace_id: str, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = 15,
                   secret_key: str | None = None, what: str = "the stored trace to match") -> dict[str, Any]:
        """Poll the stored trace until `predicate(trace)` holds; fail with the last trace seen."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.trace(trace_id, secret_key)
            if last is not None and predicate(last):
                return last
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; last stored: {json.dumps(last, indent=1)[:3000]}")

    def create_project(self, origin: str, *, require_token: bool = True) -> dict[str, str]:
        args = [sys.executable, "-m", "gateway", "project", "create", "--name", "e2e", "--origin", origin,
                "--db", self.db]
        if not require_token:
            args.append("--no-require-token")
        return json.loads(subprocess.run(args, capture_output=True, text=True, check=True, timeout=60).stdout)

    def log_trace(self, trace_id: str, session_id: str, secret_key: str, **fields: Any) -> str:
        with self.api(secret_key) as api:
            response = api.post("/v1/traces", json={"trace_id": trace_id, "session_id": session_id, **fields})
        assert response.status_code in (200, 201), response.text
        return response.json()["feedback_token"]


def start_demo(redis_url: str, db: str, log: Any) -> tuple[subprocess.Popen, dict[str, str]]:
    """`backchannel demo --json` on free ports; its one JSON line once both servers answer.

    Raises OSError when it exited first (a port taken meanwhile by another process, say). Waits on the process,
    not on the pipe's EOF: a child of the demo could hold the pipe open after the demo itself died.
    """
    port, demo_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--host", "127.0.0.1", "--port", str(port), "--demo-port",
         str(demo_port), "--db", db, "--redis", redis_url, "--json"],
        stdout=subprocess.PIPE, stderr=log, text=True,
    )
    deadline = time.monotonic() + 60
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while not selector.select(timeout=0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                break
    line = proc.stdout.readline() if proc.poll() is None else ""
    if line:
        return proc, json.loads(line)
    proc.kill()
    code = proc.wait()
    proc.stdout.close()
    raise OSError(f"backchannel demo did not start (exit code {code})")


@pytest.fixture(scope="session")
def stack(redis_server):
    workdir = tempfile.mkdtemp(prefix="bc-e2e-")
    db = os.path.join(workdir, "demo.db")
    with open(os.path.join(workdir, "demo.log"), "w") as log:
        for attempt in range(3):
            try:
                proc, info = start_demo(redis_server.url, db, log)
                break
            except OSError as exc:
                if attempt == 2:
                    raise RuntimeError(f"backchannel demo did not start; log: {Path(log.name).read_text()}") from exc
        try:
            yield Stack(info, db)
        finally:
            proc.send_signal(signal.SIGINT)  # Ctrl+C stops both servers cleanly
            try:
                code = proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                code = None
            proc.stdout.close()
        assert code is not None, "backchannel demo did not stop on Ctrl+C"
        assert code == 0, f"backchannel demo exited with {code}; log: {Path(log.name).read_text()}"


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest):
    """A page in a fresh context. Unless the test is marked `console_errors`, it must end without console errors,
    failed requests or error responses (a missing favicon aside)."""
    context = browser.new_context()
    context.add_init_script(TIMING_PROBE)
    page = context.new_page()
    page.console_errors = []  # type: ignore[attr-defined]
    problems: list[str] = []
    page.on("console", lambda msg: page.console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("response", lambda r: r.status >= 400 and not r.url.endswith("/favicon.ico")
            and problems.append(f"{r.status} {r.request.method} {r.url}"))
    page.on("requestfailed", lambda r: problems.append(f"failed {r.method} {r.url}: {r.failure}"))
    yield page
    context.close()
    if request.node.get_closest_marker("console_errors") is None:
        errors = [m for m in page.console_errors if not m.startswith("Failed to load resource")]
        assert errors == [] and problems == [], f"the browser logged errors: {errors} {problems}"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# --- shared helpers for the suite -------------------------------------------------------------------------------

PAGES = Path(__file__).resolve().parent / "pages"

# Runs before any page script: the moment each message stops streaming (data-streaming leaves "true") and the
# moment its widget draws into its shadow root, both on the page's own clock, so timing tests need no polling.
TIMING_PROBE = """
(() => {
  const marks = window.__bcMarks = {};
  const mark = (t, k) => { (marks[t] = marks[t] || {})[k] ??= performance.now(); };
  new MutationObserver(records => {
    for (const r of records) {
      const t = r.target.getAttribute("data-trace-id");
      const v = r.target.getAttribute("data-streaming");
      if (t && v === "true") mark(t, "streaming");
      else if (t && r.oldValue === "true") mark(t, "done");
    }
  }).observe(document, {attributes: true, attributeOldValue: true, subtree: true, attributeFilter: ["data-streaming"]});
  const attach = Element.prototype.attachShadow;
  Element.prototype.attachShadow = function (init) {
    const root = attach.call(this, init);
    if (this.localName === "backchannel-feedback") {
      new MutationObserver((_, observer) => {
        const t = this.closest("[data-trace-id]")?.getAttribute("data-trace-id");
        if (t && root.querySelector("[part=up]")) { mark(t, "drawn"); observer.disconnect(); }
      }).observe(root, {childList: true, subtree: true});
    }
    return root;
  };
})();
"""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "console_errors: the test expects the browser to log errors (failed requests)")


def flush(page: Page) -> None:
    """Ask the widget to send what it has queued now (a no-op while a request is in flight or backing off)."""
    try:
        if not page.is_closed():
            page.evaluate("() => window.backchannel && window.backchannel.flush && window.backchannel.flush()")
    except PlaywrightError:  # mid-navigation: the next poll tries again
        pass


def stored(stack: Stack, page: Page | None, trace_id: str, predicate: Callable[[dict[str, Any]], bool], *,
           timeout: float = 15, secret_key: str | None = None,
           what: str = "the stored trace to match") -> dict[str, Any]:
    """`stack.wait_trace`, flushing the page's queue while it polls (so tests need not sit out the 2 s timer)."""
    def flushed(trace: dict[str, Any]) -> bool:
        if predicate(trace):
            return True
        if page is not None:
            flush(page)
        return False
    return stack.wait_trace(trace_id, flushed, timeout=timeout, secret_key=secret_key, what=what)


def events_of(trace: dict[str, Any], type: str) -> list[dict[str, Any]]:
    return [e for e in trace["events"] if e["type"] == type]


def store_text(db: str) -> str:
    """Every row of every table in the store, as text, except the traces' own input and output (the backend logged
    those on purpose): what the widget's events could have put there."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        lines = []
        for table in tables:
            columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            if table == "traces":
                columns = [c for c in columns if c not in ("input", "output")]
            for row in conn.execute(f"SELECT {', '.join(columns)} FROM {table}"):
                lines.append(f"{table}: {row!r}")
        return "\n".join(lines)
    finally:
        conn.close()


class StaticSite:
    """e2e/pages on its own origin, so the bare chat is a different app on a different origin from the demo."""

    def __init__(self) -> None:
        handler = functools.partial(_QuietHandler, directory=str(PAGES))
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "StaticSite":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


@pytest.fixture(scope="session")
def static_site():
    with StaticSite() as site:
        yield site


@pytest.fixture(scope="session")
def bare_project(stack: Stack, static_site: StaticSite) -> dict[str, str]:
    return stack.create_project(static_site.origin)


class Chat:
    """One chat app driven through its own UI: the demo app or the bare static page.

    Both mark up assistant answers as <article data-trace-id>, which the helpers below rely on.
    """

    name: str
    public_key: str
    secret_key: str

    def __init__(self, stack: Stack, page: Page) -> None:
        self.stack, self.page = stack, page

    def open(self, **params: str) -> None:
        raise NotImplementedError

    def ask(self, prompt: str, *, template: str = "answer") -> str:
        """Send a prompt, wait until its answer finished streaming, and return the answer's trace id."""
        raise NotImplementedError

    def text(self, trace_id: str) -> Locator:
        raise NotImplementedError

    def action(self, trace_id: str, action: str) -> Locator:
        raise NotImplementedError

    def answer(self, trace_id: str) -> Locator:
        return self.page.locator(f'article[data-trace-id="{trace_id}"]')

    def part(self, trace_id: str, part: str) -> Locator:
        """A control of the trace's widget, inside its shadow root (Playwright's CSS engine pierces open roots)."""
        return self.answer(trace_id).locator("backchannel-feedback").locator(f"[part={part}]")

    def wait_answer(self, count: int, timeout: float = 15_000) -> str:
        """Wait until the page has `count` answers, the last one finished; return the last one's trace id."""
        self.page.wait_for_function(
            """n => { const a = document.querySelectorAll("article[data-trace-id]");
                      return a.length >= n && a[a.length - 1].getAttribute("data-streaming") !== "true"; }""",
            arg=count, timeout=timeout)
        return self.page.locator("article[data-trace-id]").last.get_attribute("data-trace-id")

    def answers(self) -> int:
        return self.page.locator("article[data-trace-id]").count()

    def stored(self, trace_id: str, predicate: Callable[[dict[str, Any]], bool], **kw: Any) -> dict[str, Any]:
        return stored(self.stack, self.page, trace_id, predicate, secret_key=self.secret_key, **kw)

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        return self.stack.trace(trace_id, self.secret_key)

    def answer_with_thumbs(self, prompt: str) -> str:
        """Open the app, ask, and wait until the answer's thumbs are shown; return its trace id."""
        self.open()
        trace_id = self.ask(prompt)
        self.shown(trace_id)
        return trace_id

    def shown(self, trace_id: str, timeout: float = 10_000) -> None:
        self.part(trace_id, "up").wait_for(state="visible", timeout=timeout)


class DemoChat(Chat):
    name = "demo"

    def __init__(self, stack: Stack, page: Page) -> None:
        super().__init__(stack, page)
        self.public_key, self.secret_key = stack.public_key, stack.secret_key

    def open(self, speed: str = "max", **params: str) -> None:
        self.page.goto(f"{self.stack.demo_url}/?{urlencode({'speed': speed, **params})}")

    def ask(self, prompt: str, *, template: str = "answer") -> str:
        count = self.answers()
        self.page.select_option("#template", template)
        self.page.fill("#prompt", prompt)
        self.page.click("#send")
        return self.wait_answer(count + 1)

    def text(self, trace_id: str) -> Locator:
        return self.answer(trace_id).locator("[data-testid=assistant-text]")

    def action(self, trace_id: str, action: str) -> Locator:
        return self.answer(trace_id).locator(f"[data-feedback-action={action}]")


class BareChat(Chat):
    """The static page: the test plays the backend, logging each trace to get its token, then streams it in."""

    name = "bare"

    def __init__(self, stack: Stack, page: Page, site: StaticSite, project: dict[str, str]) -> None:
        super().__init__(stack, page)
        self.site = site
        self.public_key, self.secret_key = project["public_key"], project["secret_key"]
        self.session = f"bare-{uuid.uuid4().hex}"
        self.texts: dict[str, str] = {}

    def open(self, delay: str | None = "300", **params: str) -> None:
        query = {"gateway": self.stack.gateway_url, "pk": self.public_key, "session": self.session, **params}
        if delay is not None:
            query["delay"] = delay
        self.page.goto(f"{self.site.origin}/bare_chat.html?{urlencode(query)}")

    def ask(self, prompt: str, *, template: str = "answer", attempt: int = 1) -> str:
        trace_id = f"bare-{uuid.uuid4()}"
        token = self.stack.log_trace(trace_id, self.session, self.secret_key, model="bare", template=template)
        n = len(self.texts) + 1
        text = (f"Bare answer {n} ({uuid.uuid4().hex[:8]}) to your question: start small, measure what matters, "
                f"and revisit the choice once real traffic shows where it hurts.")
        self.texts[trace_id] = text
        turn = {"prompt": prompt if attempt == 1 else "", "trace_id": trace_id, "token": token, "text": text,
                "draft": template == "draft"}
        self.page.evaluate("turn => window.bare.addTurn(turn, {stream: true}).then(() => true)", turn)
        return trace_id

    def text(self, trace_id: str) -> Locator:
        return self.answer(trace_id).locator("p").first

    def action(self, trace_id: str, action: str) -> Locator:
        return self.page.locator(f'button[data-feedback-action={action}][data-trace-id="{trace_id}"]')


@pytest.fixture(params=["demo", "bare"])
def chat(request: pytest.FixtureRequest, stack: Stack, page: Page) -> Chat:
    """The same checks against both apps."""
    if request.param == "demo":
        return DemoChat(stack, page)
    return BareChat(stack, page, request.getfixturevalue("static_site"), request.getfixturevalue("bare_project"))


@pytest.fixture
def demo(stack: Stack, page: Page) -> DemoChat:
    return DemoChat(stack, page)


@pytest.fixture
def bare(stack: Stack, page: Page, static_site: StaticSite, bare_project: dict[str, str]) -> BareChat:
    return BareChat(stack, page, static_site, bare_project)


def project_config(stack: Stack, public_key: str) -> dict[str, Any]:
    response = httpx.get(f"{stack.gateway_url}/v1/projects/{public_key}/config", timeout=5)
    response.raise_for_status()
    return response.json()


def focused(page: Page) -> dict[str, str | None]:
    """The focused element through open shadow roots: its part (or id, or tag) and the trace of its message."""
    return page.evaluate("""() => {
        let a = document.activeElement;
        while (a && a.shadowRoot && a.shadowRoot.activeElement) a = a.shadowRoot.activeElement;
        if (!a) return {name: null, trace: null};
        const host = a.getRootNode().host || a;
        const message = host.closest && host.closest("[data-trace-id]");
        return {name: a.getAttribute("part") || a.id || a.localName,
                trace: message && message.getAttribute("data-trace-id")};
    }""")


def duplicates(stack: Stack) -> int:
    """How many events the gateway has answered `duplicate` (a re-sent event) since it started."""
    metrics = httpx.get(f"{stack.gateway_url}/metrics", timeout=5).text
    return int(next(line.split()[-1] for line in metrics.splitlines()
                    if line.startswith('backchannel_events_total{status="duplicate"}')))
