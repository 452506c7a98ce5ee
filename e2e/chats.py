"""Page objects: a chat app driven through its own UI, and what the gateway stored for it.

`Chat` is what a test needs from any chat UI that carries the widget; `DemoChat` (Quill, the demo app) and `BareChat`
(e2e/pages/bare_chat.html, a static page of a different make on another origin) implement it, and the `chat` fixture
runs a test against both. To test your own app, write one more subclass: `open`, `ask`, `text` and `action` are all
it needs (see the Testing section of the README).
"""

from __future__ import annotations

import uuid
from typing import Any, Callable
from urllib.parse import urlencode

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Locator, Page

from e2e.stack import Stack, StaticSite


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

    def open(self, speed: str = "max", delay: str | None = "0", model: str | None = None, **params: str) -> None:
        """Quill with its answers streamed at `speed`, the thumbs shown `delay` ms after an answer (None: the
        project's delay) and the A/B variant pinned to `model` (None: the session's)."""
        query = {"speed": speed, **params}
        if delay is not None:
            query["delay"] = delay
        if model is not None:
            query["model"] = model
        self.page.goto(f"{self.stack.demo_url}/?{urlencode(query)}")

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
