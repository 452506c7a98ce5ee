"""The widget: its bundle and serving, then its behaviour in a real Chromium against the real gateway.

The browser tests run the gateway app (`tests/widget_harness.py`: a temporary SQLite store, uvicorn in a thread)
behind a thin recorder of every `POST /v1/events`; they assert on those requests, as Plausible's tracker tests do, and
on what the gateway stored. Each test has its own project; each message is a trace logged with `POST /v1/traces` and
carries its real feedback token. Pages live on http://127.0.0.1 and the widget on http://localhost, so every request
is cross-origin.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import time
from pathlib import Path

import brotli
import httpx
import pytest
from playwright.sync_api import Error as PlaywrightError
from starlette.applications import Starlette

from tests.servers import wait_for
from tests.widget_harness import WidgetSite
from widget.bundle import bundle
from widget.routes import routes as widget_routes

BUDGET = 5632  # gzipped bytes, as served
SECRET = "SENTINEL-TEXT"  # in every page's messages and prompts; must never reach the gateway
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
WIDGET = Path(__file__).resolve().parent.parent / "widget"
REASONS = ["Wrong information", "Too long", "Didn't follow instructions", "Offensive or unsafe", "Other"]  # the defaults
SESSION = "sess-1"  # the end-user session the tests' traces are logged under


# --- the bundle and its serving ---------------------------------------------------------------------------------

def test_bundle_fits_the_size_budget():
    b = bundle()
    sizes = f"widget.js: {len(b.raw)} B raw, {len(b.gzip)} B gzip, {len(b.brotli)} B brotli (budget {BUDGET} B gzip)"
    print(sizes)
    assert gzip.decompress(b.gzip) == b.raw and brotli.decompress(b.brotli) == b.raw
    assert len(b.gzip) <= BUDGET, sizes


def test_served_bundle_is_the_build_of_the_sources():
    """`widget/dist/widget.min.js` is committed; rebuilding it from `widget/src/` must give the same bytes."""
    assert (WIDGET / "node_modules" / ".bin" / "esbuild").exists(), "run `bash .ci/setup.sh test` (npm ci in widget/)"
    built = subprocess.run(["node", str(WIDGET / "build.mjs"), "--stdout"], capture_output=True, check=True).stdout
    assert built == bundle().raw, "widget/dist/widget.min.js is stale: run `npm run build` in widget/"


def test_bundle_parses_as_javascript(tmp_path):
    path = tmp_path / "widget.js"
    path.write_bytes(bundle().raw)
    result = subprocess.run(["node", "--check", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.fixture
async def client():
    app = Starlette(routes=widget_routes)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        yield c


@pytest.mark.parametrize("accept, coding", [
    ("gzip, deflate, br", "br"), ("gzip", "gzip"), ("br;q=0, gzip;q=0.5", "gzip"), ("", None), ("identity", None),
    ("*", "gzip"), ("br;q=0, gzip;q=0", None),
])
async def test_widget_js_is_served_compressed_by_accept_encoding(client, accept, coding):
    b = bundle()
    r = await client.get("/v1/widget.js", headers={"Accept-Encoding": accept})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/javascript; charset=utf-8"
    assert r.headers["vary"] == "Accept-Encoding"
    assert r.headers["access-control-allow-origin"] == "*"
    assert r.headers["cache-control"] == "public, max-age=300"
    assert r.headers.get("content-encoding") == coding
    assert r.content == b.raw  # httpx decodes br and gzip
    assert r.headers["etag"] == (f'"{b.version}-{coding}"' if coding else f'"{b.version}"')


async def test_versioned_url_is_immutable_and_a_stale_one_is_not(client):
    b = bundle()
    r = await client.get(b.path)
    assert r.status_code == 200 and r.content == b.raw
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    stale = await client.get("/v1/widget.000000000000.js")
    assert stale.status_code == 200 and stale.headers["cache-control"] == "public, max-age=300"


async def test_etag_revalidation_answers_304(client):
    first = await client.get("/v1/widget.js", headers={"Accept-Encoding": "gzip"})
    again = await client.get("/v1/widget.js", headers={"Accept-Encoding": "gzip", "If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == first.headers["etag"] and again.headers["cache-control"] == "public, max-age=300"
    assert "content-encoding" not in again.headers
    other = await client.get("/v1/widget.js", headers={"If-None-Match": '"somethingelse"'})
    assert other.status_code == 200


async def test_head_sends_headers_only(client):
    r = await client.head("/v1/widget.js")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-type"] == "application/javascript; charset=utf-8"


# --- the real gateway for the browser tests ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def site(tmp_path_factory):
    server = WidgetSite(tmp_path_factory.mktemp("widget") / "bc.db").start()
    yield server
    server.stop()


class Chat:
    """One test's project on the real gateway, its traces, and the event requests its pages sent."""

    def __init__(self, site: WidgetSite) -> None:
        self.site = site
        self.open_pages: list = []
        self.tokens: dict[str, str] = {}
        self.use_project(require_token=True)

    def use_project(self, *, require_token: bool) -> None:
        self.pk, self.secret = self.site.create_project(require_token=require_token)

    @property
    def requests(self) -> list[dict]:
        return self.site.requests

    @property
    def plan(self) -> list[tuple[int, dict]]:
        return self.site.plan

    def trace(self, trace: str, session: str = SESSION) -> str:
        """Log a generation (`POST /v1/traces` with the secret key); returns its real feedback token."""
        self.tokens[trace] = self.site.log_trace(self.secret, trace, session)
        return self.tokens[trace]

    def message(self, trace: str, text: str = "an answer", *, token: str | None = "auto",
                streaming: str | None = "false", actions: bool = False, session: str = SESSION) -> str:
        """An assistant message for a newly logged trace, carrying its real token (`token=None`: none)."""
        real = self.trace(trace, session)
        attrs = f'data-trace-id="{trace}"'
        if token:
            attrs += f' data-feedback-token="{real if token == "auto" else token}"'
        if streaming is not None:
            attrs += f' data-streaming="{streaming}"'
        buttons = ('<button data-feedback-action="copy">Copy</button>'
                   '<button data-feedback-action="regenerate">Regenerate</button>') if actions else ""
        return f"<article {attrs}><p>{SECRET} {text}</p>{buttons}</article>"

    def stored(self, trace: str) -> dict:
        return self.site.stored(self.secret, trace)

    def delivered(self) -> list[dict]:
        return self.site.delivered()

    def events(self, type: str | None = None, trace: str | None = None) -> list[dict]:
        return [e for e in self.delivered()
                if (type is None or e["type"] == type) and (trace is None or e["trace_id"] == trace)]

    def wait(self, type: str, trace: str | None = None, count: int = 1, timeout: float = 10) -> list[dict]:
        """Wait for events; meanwhile open pages are asked to flush, so tests need not sit out the 2 s timer."""
        def arrived():
            for page in self.open_pages:
                try:
                    page.is_closed() or page.evaluate("() => window.backchannel && backchannel.flush()")
                except PlaywrightError:
                    pass  # navigating
            return (found := self.events(type, trace)) and len(found) >= count and found

        return wait_for(arrived, timeout=timeout, what=f"{count} {type!r} event(s)")

    def wait_stored(self, trace: str, predicate, what: str = "the stored trace to match") -> dict:
        return wait_for(lambda: (stored := self.stored(trace)) and predicate(stored) and stored, what=what)


PAGE_SCRIPT = """
document.addEventListener('click', e => {
  const copy = e.target.closest('[data-feedback-action=copy]');
  if (copy) navigator.clipboard.writeText(copy.closest('article').querySelector('p').textContent).catch(() => {});
});
"""


@pytest.fixture
def chat(site, request):
    site.requests.clear()
    site.plan.clear()
    site.record_referer = request.node.name + "-"  # a closing page of an earlier test may still be sending
    return Chat(site)


@pytest.fixture
def open_page(chat, site, browser, request):
    contexts = []
    console: list[str] = []

    def open_(body: str, *, context=None, head: str = "", stub: str = "", before: str = "", **attrs):
        attrs = {"data-project": chat.pk, "data-delay-ms": "100", **attrs}
        tag = " ".join(f'{k}="{v}"' if v != "" else k for k, v in attrs.items() if v is not None)
        name = f"{request.node.name}-{len(chat.open_pages)}"
        site.pages[name] = (
            f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="referrer" content="unsafe-url"><title>Chat</title>{head}</head><body>'
            f'<main><h1>Chat</h1><button id="before">Before</button><div id="chat">{body}</div><p id="after">after</p>'
            f'</main><script>{PAGE_SCRIPT}{stub}</script>{before}<script src="{site.widget_src}" {tag}></script>'
            f"</body></html>")
        if context is None:
            context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
            contexts.append(context)
        page = context.new_page()
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        page.goto(site.url(name))
        chat.open_pages.append(page)
        page.console = console
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not [line for line in console if line.startswith("pageerror")], console
    for r in site.requests:
        assert SECRET.lower() not in r["body"].lower(), "page text reached the gateway"
        assert r["method"] == "POST", "a request needed a CORS preflight"
        assert r["query"] == {"project": chat.pk}
    assert SECRET.encode() not in site.db_bytes(), "page text reached the store"


def json_results(request: dict) -> list[tuple]:
    """(status, error) of each event in a recorded request's answer from the gateway."""
    return [(r["status"], r.get("error")) for r in json.loads(request["answer"])["results"]]


def host_count(page, trace: str) -> int:
    return page.evaluate("t => document.querySelectorAll(`[data-trace-id='${t}'] backchannel-feedback`).length", trace)


def part(page, trace: str, name: str) -> str:
    return f"[data-trace-id='{trace}'] backchannel-feedback >> [part={name}]"

def deep_focus(page) -> str | None:
    """The `part` of the focused element inside the widget's shadow root."""
    return page.evaluate("() => document.activeElement?.shadowRoot?.activeElement?.getAttribute('part') ?? null")


# --- behaviour --------------------------------------------------------------------------------------------------

def test_thumbs_appear_only_after_the_delay_once_streaming_ends(open_page, chat):
    page = open_page(chat.message("t1", streaming="true"), **{"data-delay-ms": "700"})
    page.wait_for_function("() => document.querySelector('backchannel-feedback')")  # space reserved already
    assert page.locator(part(page, "t1", "up")).count() == 0
    ended = page.evaluate("() => { document.querySelector('article').setAttribute('data-streaming', 'false');"
                          " return Date.now() }")
    shown = chat.wait("shown", "t1")[0]
    assert shown["ts"] - ended >= 700
    assert shown["token"] == chat.tokens["t1"] and "session_id" not in shown and "dwell_ms" not in shown
    stored = chat.wait_stored("t1", lambda t: t["events"])
    assert [(e["type"], e["session_id"], e["ts"]) for e in stored["events"]] == [("shown", SESSION, shown["ts"])]
    up, down = page.locator(part(page, "t1", "up")), page.locator(part(page, "t1", "down"))
    assert up.get_attribute("aria-label") == "Good response" and down.get_attribute("aria-label") == "Bad response"
    assert up.get_attribute("aria-pressed") == "false"
    assert page.evaluate("() => document.querySelector('backchannel-feedback').shadowRoot !== null")  # open root


def test_showing_the_thumbs_moves_nothing(open_page, chat):
    page = open_page(chat.message("t1", streaming="true"))
    page.wait_for_function("() => document.querySelector('backchannel-feedback')")
    page.evaluate("() => document.querySelector('article').removeAttribute('data-streaming')")
    before = page.locator("#after").bounding_box()
    chat.wait("shown", "t1")
    page.locator(part(page, "t1", "up")).wait_for()
    assert page.locator("#after").bounding_box() == before


def test_vote_reason_comment_and_change_of_mind(open_page, chat):
    page = open_page(chat.message("t1"))
    chat.wait("shown", "t1")
    page.locator(part(page, "t1", "up")).click()
    up = chat.wait("feedback", "t1")[0]
    assert up["value"] == 1 and up["dwell_ms"] >= 0 and "reason" not in up
    assert page.locator(part(page, "t1", "up")).get_attribute("aria-pressed") == "true"
    assert page.locator(part(page, "t1", "thanks")).text_content() == "Thanks for your feedback!"

    page.locator(part(page, "t1", "down")).click()
    assert page.locator(part(page, "t1", "up")).get_attribute("aria-pressed") == "false"
    assert page.locator(part(page, "t1", "down")).get_attribute("aria-pressed") == "true"
    reasons = page.locator(part(page, "t1", "reason"))
    assert reasons.all_text_contents() == REASONS
    reasons.nth(1).click()
    page.locator(part(page, "t1", "comment")).fill("shorter please")
    page.locator(part(page, "t1", "submit")).click()
    events = chat.wait("feedback", "t1", count=4)
    assert [(e["value"], e.get("reason"), e.get("comment")) for e in events] == [
        (1, None, None), (0, None, None), (0, "too_long", None), (0, "too_long", "shorter please")]
    assert ["dwell_ms" in e for e in events] == [True, False, False, False]
    assert len({e["id"] for e in events}) == 4
    assert reasons.nth(1).get_attribute("aria-pressed") == "true"
    assert not page.locator(part(page, "t1", "comment")).is_visible()
    stored = chat.stored("t1")  # one current vote; the log keeps all four
    assert [(r["session_id"], r["value"], r["reason"], r["comment"]) for r in stored["rating"]] == [
        (SESSION, 0, "too_long", "shorter please")]
    assert [e["id"] for e in stored["events"] if e["type"] == "feedback"] == [e["id"] for e in events]


def test_keyboard_only(open_page, chat):
    page = open_page(chat.message("t1"))
    chat.wait("shown", "t1")
    page.locator("#before").focus()
    page.keyboard.press("Tab")
    assert deep_focus(page) == "up"
    page.keyboard.press("Tab")
    assert deep_focus(page) == "down"
    page.keyboard.press("Enter")
    assert deep_focus(page) == "reason"  # focus moves into the opened reasons
    page.keyboard.press("Enter")
    assert deep_focus(page) == "comment"
    page.keyboard.type("needs sources")
    page.keyboard.press("Tab")
    assert deep_focus(page) == "submit"
    page.keyboard.press("Enter")
    assert deep_focus(page) == "down"
    events = chat.wait("feedback", "t1", count=3)
    assert [(e["value"], e.get("reason"), e.get("comment")) for e in events] == [
        (0, None, None), (0, "wrong_information", None), (0, "wrong_information", "needs sources")]
    page.keyboard.press("Enter")  # reopen, then Escape closes and gives focus back
    page.keyboard.press("Escape")
    assert deep_focus(page) == "down" and not page.locator(part(page, "t1", "comment")).is_visible()


def test_messages_added_later_quiet_detection_and_rerenders(open_page, chat):
    page = open_page(chat.message("t1"))
    chat.trace("t2")
    chat.wait("shown", "t1")
    # No data-streaming: done after 1 s without changes.
    started = page.evaluate("""token => {
      const a = document.createElement('article'); a.dataset.traceId = 't2'; a.dataset.feedbackToken = token;
      document.querySelector('#chat').append(a);
      let n = 0; const tick = setInterval(() => { a.textContent += ' word'; if (++n == 5) clearInterval(tick) }, 100);
      return Date.now() }""", chat.tokens["t2"])
    shown = chat.wait("shown", "t2")[0]
    assert shown["ts"] - started >= 400 + 1000 + 100
    # A framework re-renders both messages: new elements, same traces; and one clears its children.
    page.evaluate("""() => {
      const a = document.querySelector("[data-trace-id='t1']"); a.replaceWith(a.cloneNode(true));
      document.querySelector("[data-trace-id='t2']").textContent = 'rewritten'; }""")
    page.wait_for_function("() => [...document.querySelectorAll('article')].every(a => a.querySelector('backchannel-feedback'))")
    assert host_count(page, "t1") == 1 and host_count(page, "t2") == 1
    page.locator(part(page, "t1", "up")).click()
    chat.wait("feedback", "t1")
    assert len(chat.events("shown")) == 2
    # A clone inserted beside the original (same trace twice) gets no second widget.
    page.evaluate("() => { const a = document.querySelector(\"[data-trace-id='t2']\");"
                  " const c = a.cloneNode(true); c.querySelector('backchannel-feedback')?.remove(); a.after(c) }")
    page.evaluate("() => new Promise(r => setTimeout(r, 50))")
    assert host_count(page, "t2") == 1


def test_copy_by_selection_and_by_button_sends_only_the_length(open_page, chat):
    page = open_page(chat.message("t1", "copy me please", actions=True) + chat.message("t2", "other", actions=True))
    chat.wait("shown", count=2)
    page.evaluate("""() => {
      const p = document.querySelector("[data-trace-id='t1'] p"), r = document.createRange();
      r.setStart(p.firstChild, 0); r.setEnd(p.firstChild, 13); getSelection().removeAllRanges(); getSelection().addRange(r);
    }""")
    page.keyboard.press("Control+C")
    assert chat.wait("copied", "t1")[0]["length"] == 13
    page.locator("[data-trace-id='t2'] [data-feedback-action=copy]").click()
    copied = chat.wait("copied", "t2")[0]
    assert copied["length"] == len(f"{SECRET} other")
    assert set(copied) == {"id", "type", "trace_id", "token", "ts", "length", "dwell_ms"}
    assert [e["length"] for e in chat.stored("t1")["events"] if e["type"] == "copied"] == [13]
    assert [e["length"] for e in chat.stored("t2")["events"] if e["type"] == "copied"] == [copied["length"]]
    assert SECRET.encode() not in chat.site.db_bytes()  # the copied text is nowhere in the store


def test_draft_edits_send_a_ratio(open_page, chat):
    draft = '<form id="f" onsubmit="event.preventDefault()"><textarea data-feedback-draft="t1">Dear team, the release is on Monday.</textarea></form>'
    page = open_page(chat.message("t1") + draft)
    chat.wait("shown", "t1")
    box = page.locator("textarea[data-feedback-draft]")
    box.click()
    page.keyboard.press("End")
    page.keyboard.type(" Thanks")
    first = chat.wait("edited", "t1")[0]
    assert 0 < first["edit_ratio"] < 0.1
    page.locator("#before").focus()  # blur
    events = chat.wait("edited", "t1", count=2)
    assert events[1]["edit_ratio"] == round(len(" Thanks") / len("Dear team, the release is on Monday. Thanks"), 3)
    box.fill("Something else entirely")
    page.evaluate("() => document.querySelector('#f').requestSubmit()")
    assert chat.wait("edited", "t1", count=3)[2]["edit_ratio"] > 0.7


def test_regenerate_counts_attempts_across_messages(open_page, chat):
    page = open_page(chat.message("t1", actions=True), **{"data-delay-ms": "0"})
    chat.wait("shown", "t1")
    page.locator("[data-feedback-action=regenerate]").click()
    assert chat.wait("regenerated", "t1")[0]["attempt"] == 2
    page.evaluate(f"() => document.querySelector('#chat').insertAdjacentHTML('beforeend', `{chat.message('t2', actions=True)}`)")
    chat.wait("shown", "t2")
    page.locator("[data-trace-id='t2'] [data-feedback-action=regenerate]").click()
    assert chat.wait("regenerated", "t2")[0]["attempt"] == 3


def test_rephrase_is_reported_for_the_previous_answer(open_page, chat):
    page = open_page(f'<div data-feedback-role="user">{SECRET} how do I reset my password</div>' + chat.message("t1"))
    chat.wait("shown", "t1")
    page.evaluate(f"""() => {{
      document.querySelector('#chat').insertAdjacentHTML('beforeend',
        '<div data-feedback-role="user">{SECRET} how can I reset my password</div>' + `{chat.message('t2')}`);
    }}""")
    rephrased = chat.wait("rephrased", "t1")[0]
    assert 0.5 <= rephrased["similarity"] < 1
    # Not similar: nothing for t2.
    page.evaluate("""() => document.querySelector('#chat').insertAdjacentHTML('beforeend',
        '<div data-feedback-role="user">write a poem about autumn leaves</div>')""")
    page.locator("#before").click()
    page.evaluate("() => backchannel.flush()")
    assert chat.events("rephrased", "t2") == []


def test_no_rephrase_when_the_answer_was_copied(open_page, chat):
    page = open_page('<div data-feedback-role="user">how do I reset my password</div>' + chat.message("t1", actions=True))
    chat.wait("shown", "t1")
    page.locator("[data-feedback-action=copy]").click()
    chat.wait("copied", "t1")
    page.evaluate("""() => document.querySelector('#chat').insertAdjacentHTML('beforeend',
        '<div data-feedback-role="user">how can I reset my password</div>')""")
    page.evaluate("() => backchannel.flush()")
    assert chat.events("rephrased") == []


def test_abandon_on_close_after_one_answer(open_page, chat):
    page = open_page(chat.message("t1"))
    chat.wait("shown", "t1")
    page.close(run_before_unload=True)
    assert chat.wait("abandoned", "t1")[0]["dwell_ms"] >= 0
    assert chat.stored("t1")["signals"] == {"shown": 1, "abandoned": 1}


def test_no_abandon_after_a_thumbs_up(open_page, chat):
    page = open_page(chat.message("t1"))
    chat.wait("shown", "t1")
    page.locator(part(page, "t1", "up")).click()
    page.close(run_before_unload=True)
    chat.wait("feedback", "t1")
    assert chat.events("abandoned") == []


def test_offline_then_reload_delivers_exactly_once(open_page, chat, browser):
    context = browser.new_context()
    page = open_page(chat.message("t1"), context=context)
    chat.wait("shown", "t1")
    context.set_offline(True)
    page.locator(part(page, "t1", "up")).click()
    page.wait_for_function("() => Object.keys(localStorage).some(k => localStorage[k].includes('\"feedback\"'))")
    page.evaluate("() => backchannel.flush()")  # fails: offline
    context.set_offline(False)
    page.reload()
    chat.wait("feedback", "t1")
    chat.wait("shown", "t1", count=2)  # the reloaded page shows its thumbs again, a moment after the queue went out
    page.evaluate("() => backchannel.flush()")
    page.wait_for_function("() => !Object.keys(localStorage).some(k => k.startsWith('bc_q_'))")
    assert len([e for e in chat.events("feedback", "t1")]) == 1
    stored = chat.stored("t1")  # each event once (the reloaded page showed the thumbs again: a second "shown")
    assert sorted(e["id"] for e in stored["events"]) == sorted({e["id"] for e in chat.delivered()})
    assert sorted(e["type"] for e in stored["events"]) == ["feedback", "shown", "shown"]
    assert [(r["session_id"], r["value"]) for r in stored["rating"]] == [(SESSION, 1)]
    context.close()


def test_429_and_5xx_back_off_then_deliver(open_page, chat):
    open_page(chat.message("t1"), **{"data-delay-ms": "0"})
    chat.plan[:] = [(429, {"Retry-After": "2"}), (503, {})]
    chat.wait("shown", "t1", timeout=20)
    attempts = [r for r in chat.requests if r["method"] == "POST"]
    assert [r["status"] for r in attempts] == [429, 503, 200]
    assert attempts[1]["at"] - attempts[0]["at"] >= 1.99  # Retry-After: 2 (clocks read a hair apart)
    assert attempts[0]["body"] == attempts[2]["body"]  # the same events, the same ids
    assert [e["type"] for e in chat.stored("t1")["events"]] == ["shown"]


def test_4xx_drops_the_batch_with_one_warning_and_rejected_events_are_not_retried(open_page, chat):
    page = open_page(chat.message("t1"), **{"data-delay-ms": "0"})
    chat.plan[:] = [(400, {})]
    # (page.evaluate lets Playwright deliver the console messages that arrived meanwhile)
    wait_for(lambda: page.evaluate("1") and any("HTTP 400" in line for line in page.console),
             what="the widget to handle the 400")
    page.evaluate("() => { backchannel.track('bogus', 't1'); return backchannel.flush() }")
    page.evaluate("() => backchannel.flush()")
    assert [r["status"] for r in chat.requests] == [400, 200]
    assert [e["type"] for e in chat.delivered()] == ["bogus"]
    assert json_results(chat.requests[1]) == [("rejected", "unknown_type")]
    assert chat.stored("t1")["events"] == []  # the dropped batch's "shown" is gone
    warnings = [line for line in page.console if line.startswith("warning: backchannel")]
    assert len(warnings) == 2 and "400" in warnings[0] and "rejected" in warnings[1]
    page.evaluate("() => backchannel.flush()")
    assert len(chat.requests) == 2


def test_consent_pending_sends_nothing_until_granted(open_page, chat):
    page = open_page(chat.message("t1"), **{"data-consent": "pending"})
    page.locator(part(page, "t1", "up")).click()
    page.evaluate("() => backchannel.flush()")
    assert chat.requests == []
    assert page.evaluate("() => Object.keys(localStorage).filter(k => k.startsWith('bc_q_'))") == []
    page.evaluate("() => backchannel.consent(true)")
    chat.wait("feedback", "t1")
    assert [e["type"] for e in chat.delivered()] == ["shown", "feedback"]


def test_do_not_track_is_honoured_when_asked(open_page, chat):
    gpc = "<script>Object.defineProperty(navigator, 'globalPrivacyControl', {get: () => true})</script>"
    page = open_page(chat.message("t1"), head=gpc, **{"data-respect-dnt": ""})
    page.evaluate("() => { backchannel.rate('t1', 'up'); return backchannel.flush() }")
    assert page.evaluate("() => document.querySelectorAll('backchannel-feedback').length") == 0
    assert chat.requests == []
    ignored = open_page(chat.message("t2"), head=gpc)  # without data-respect-dnt the signal is not consulted
    chat.wait("shown", "t2")
    ignored.close()


def test_stub_calls_made_before_load_are_replayed(open_page, chat):
    stub = ("window.backchannel=window.backchannel||function(){(window.backchannel.q=window.backchannel.q||[]).push(arguments)};"
            "backchannel('rate','t9','down',{reason:'other',comment:'meh'});backchannel('track','copied','t9',{length:4});")
    chat.use_project(require_token=False)
    chat.trace("t9")
    page = open_page("", stub=stub)
    events = chat.wait("feedback", "t9") + chat.wait("copied", "t9")
    assert (events[0]["value"], events[0]["reason"], events[0]["comment"]) == (0, "other", "meh")
    assert events[1]["length"] == 4
    # No token on the page: a per-tab session id, stable across reloads of the tab.
    sid = events[0]["session_id"]
    assert sid and events[1]["session_id"] == sid and "token" not in events[0]
    page.reload()
    page.evaluate("() => { backchannel.rate('t9', 'up'); return backchannel.flush() }")
    assert chat.wait("feedback", "t9", count=2)[1]["session_id"] == sid
    stored = chat.stored("t9")
    assert [(r["session_id"], r["value"], r["reason"]) for r in stored["rating"]] == [(sid, 1, None)]
    assert stored["signals"] == {"copied": 1}
    page.evaluate("() => backchannel.rate('t9', 'sideways')")  # ignored


def test_data_session_id_is_sent_beside_the_token(open_page, chat):
    open_page(chat.message("t1", session="sess-42"), **{"data-session-id": "sess-42"})  # the app's session
    shown = chat.wait("shown", "t1")[0]
    assert (shown["token"], shown["session_id"]) == (chat.tokens["t1"], "sess-42")
    assert [(e["type"], e["session_id"]) for e in chat.stored("t1")["events"]] == [("shown", "sess-42")]


def test_required_token_waits_for_the_token(open_page, chat):
    page = open_page(chat.message("t1", token=None), **{"data-delay-ms": "0"})  # the project requires tokens
    page.wait_for_function("() => document.querySelector('backchannel-feedback')")
    page.evaluate("() => backchannel.flush()")
    assert page.locator(part(page, "t1", "up")).count() == 0 and chat.events("shown") == []
    late = chat.trace("t1")  # the app's backend answers later
    page.evaluate("token => document.querySelector('article').dataset.feedbackToken = token", late)
    assert chat.wait("shown", "t1")[0]["token"] == late
    assert [e["type"] for e in chat.stored("t1")["events"]] == ["shown"]


def test_twenty_events_flush_at_once(open_page, chat):
    chat.use_project(require_token=False)  # no tokens on the page: the per-tab session
    for i in range(20):
        chat.trace(f"t{i}")
    page = open_page("", **{"data-delay-ms": "0"})
    page.evaluate("() => { for (let i = 0; i < 20; i++) backchannel.track('copied', 't' + i, {length: i}) }")
    wait_for(lambda: len(chat.delivered()) == 20, timeout=1.5, what="20 events before the 2 s timer")
    assert len(chat.requests) == 1
    assert json_results(chat.requests[0]) == [("accepted", None)] * 20


def test_one_tab_never_sends_another_live_tabs_queue(open_page, chat, browser):
    chat.use_project(require_token=False)
    chat.trace("from-a")
    chat.trace("from-b")
    context = browser.new_context()
    a = open_page("", context=context)
    a.route("**/v1/events**", lambda route: route.abort())  # tab A cannot deliver
    a.evaluate("() => { backchannel.track('copied', 'from-a', {length: 1}); return backchannel.flush() }")
    a.wait_for_function("() => Object.keys(localStorage).some(k => localStorage[k].includes('from-a'))")
    b = open_page("", context=context)
    b.evaluate("() => { backchannel.track('copied', 'from-b', {length: 2}); return backchannel.flush() }")
    assert [e["trace_id"] for e in chat.delivered()] == ["from-b"]
    a.close()  # A is gone: its lock is free, B takes its queue
    wait_for(lambda: b.evaluate("() => backchannel.flush().then(() => true)") and chat.events(trace="from-a"),
             what="B to adopt A's queue")
    assert len({e["id"] for e in chat.events(trace="from-a")}) == 1
    assert [e["type"] for e in chat.stored("from-a")["events"]] == ["copied"]
    context.close()


HOSTILE_CSS = """<style>
  * { color: rgb(255, 0, 0) !important; font-size: 40px !important; letter-spacing: 9px !important; }
  button { display: none !important; background: rgb(0, 255, 0) !important; }
  backchannel-feedback { display: none !important; }
</style>"""


def widget_style(page) -> dict:
    return page.evaluate("""() => {
      const b = document.querySelector('backchannel-feedback'), up = b.shadowRoot.querySelector('[part=up]'), s = getComputedStyle(up);
      return {host: getComputedStyle(b).display, display: s.display, bg: s.backgroundColor, color: s.color,
              size: s.fontSize, spacing: s.letterSpacing, width: up.getBoundingClientRect().width};
    }""")


def test_host_css_cannot_restyle_the_widget_but_custom_properties_theme_it(open_page, chat):
    clean = open_page(chat.message("t1"))
    chat.wait("shown", "t1")
    expected = widget_style(clean)
    hostile = open_page(chat.message("t2"), head=HOSTILE_CSS)
    chat.wait("shown", "t2")
    assert widget_style(hostile) == expected
    themed = open_page(chat.message("t3"), head="<style>article { --bc-accent: rgb(1, 2, 3) }</style>")
    chat.wait("shown", "t3")
    themed.locator(part(themed, "t3", "up")).click()
    assert themed.evaluate("() => getComputedStyle(document.querySelector('backchannel-feedback').shadowRoot"
                           ".querySelector('[part=up]')).backgroundColor") == "rgb(1, 2, 3)"


def test_follows_the_color_scheme_and_saves_screenshots(open_page, chat):
    ARTIFACTS.mkdir(exist_ok=True)
    colors = {}
    for scheme in ("light", "dark"):
        page = open_page(chat.message(f"t-{scheme}"))
        page.emulate_media(color_scheme=scheme)
        chat.wait("shown", f"t-{scheme}")
        page.locator(part(page, f"t-{scheme}", "down")).click()
        colors[scheme] = widget_style(page)["bg"]
        page.locator(f"[data-trace-id='t-{scheme}']").screenshot(path=str(ARTIFACTS / f"widget-{scheme}.png"))
    assert colors["light"] != colors["dark"]


def test_axe_finds_no_violations(open_page, chat):
    from axe_playwright_python.sync_playwright import Axe

    page = open_page(chat.message("t1"))
    chat.wait("shown", "t1")
    axe = Axe()
    assert axe.run(page).violations_count == 0, axe.run(page).generate_report()
    page.locator(part(page, "t1", "down")).click()
    page.locator(part(page, "t1", "reason")).first.click()
    results = axe.run(page)
    assert results.violations_count == 0, results.generate_report()


def test_loading_twice_keeps_one_widget(open_page, chat):
    page = open_page(chat.message("t1"))
    page.add_script_tag(url=chat.site.widget_src)  # an SPA injecting the tag again
    chat.wait("shown", "t1")
    page.evaluate("() => backchannel.flush()")
    assert host_count(page, "t1") == 1 and len(chat.events("shown")) == 1


def test_event_ids_are_time_ordered_uuid7(open_page, chat):
    open_page(chat.message("t1") + chat.message("t2"), **{"data-delay-ms": "0"})
    chat.wait("shown", count=2)
    ids = [e["id"] for e in chat.delivered()]
    assert all(re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", i) for i in ids), ids
    # The first 48 bits are the page's clock in milliseconds: ids sort by time, and land at the end of the index.
    stamps = [int(i.replace("-", "")[:12], 16) for i in ids]
    assert all(abs(stamp - time.time() * 1000) < 60_000 for stamp in stamps), stamps
    assert len(set(ids)) == len(ids)


# --- accept / insert, host events -------------------------------------------------------------------------------

def test_accept_and_insert_send_accepted_and_count_as_positive(open_page, chat):
    buttons = ('<button data-feedback-action="accept">Use this</button>'
               '<button data-feedback-action="insert" data-trace-id="t1">Insert</button>')
    page = open_page(chat.message("t1").replace("</article>", buttons + "</article>"))
    chat.wait("shown", "t1")
    page.locator("[data-feedback-action=accept]").click()
    page.locator("[data-feedback-action=insert]").click()
    events = chat.wait("accepted", "t1", count=2)
    assert [e["how"] for e in events] == ["accept", "insert"]
    assert "dwell_ms" in events[0] and "dwell_ms" not in events[1]
    page.close(run_before_unload=True)  # one turn, but accepted: not abandoned
    stored = chat.wait_stored("t1", lambda t: [e["type"] for e in t["events"]].count("accepted") == 2)
    assert [e.get("how") for e in stored["events"] if e["type"] == "accepted"] == ["accept", "insert"]
    assert stored["signals"] == {"shown": 1, "accepted": 1}  # sessions that sent each signal


HOOKS = ("window.heard=[];backchannel('on','feedback',p=>heard.push(['feedback',p]));"
         "backchannel('on','signal',p=>heard.push(['signal',p]));")


def test_host_events_and_comment_on_the_current_vote(open_page, chat):
    stub = ("window.backchannel=window.backchannel||function(){(window.backchannel.q=window.backchannel.q||[]).push(arguments)};"
            + HOOKS)
    page = open_page(chat.message("t1").replace("</article>", '<button data-feedback-action="accept">Use</button></article>'),
                     stub=stub)
    chat.wait("shown", "t1")
    assert not page.evaluate("() => backchannel.comment('t1', 'no vote yet')")  # nothing to attach it to
    page.locator(part(page, "t1", "down")).click()
    page.locator(part(page, "t1", "reason")).nth(1).click()
    assert page.evaluate("() => backchannel.comment('t1', '  needs more detail  ')")
    page.locator("[data-feedback-action=accept]").click()
    heard = page.wait_for_function("() => heard.length == 5 && heard").json_value()
    assert heard == [
        ["signal", {"type": "shown", "traceId": "t1", "props": {}}],
        ["feedback", {"traceId": "t1", "value": "down", "update": False}],
        ["feedback", {"traceId": "t1", "value": "down", "reason": "too_long", "update": True}],
        ["feedback", {"traceId": "t1", "value": "down", "reason": "too_long", "comment": "needs more detail",
                      "update": True}],
        ["signal", {"type": "accepted", "traceId": "t1", "props": {"how": "accept"}}],
    ]
    chat.wait("accepted", "t1")
    assert [(e["value"], e.get("reason"), e.get("comment")) for e in chat.events("feedback", "t1")] == [
        (0, None, None), (0, "too_long", None), (0, "too_long", "needs more detail")]
    stored = chat.stored("t1")
    assert [(r["value"], r["reason"], r["comment"]) for r in stored["rating"]] == [(0, "too_long", "needs more detail")]
    # A listener that throws is the page's error, not the widget's: the next listeners and events still run.
    with page.expect_event("pageerror") as error:
        page.evaluate("() => { backchannel.on('feedback', () => { throw new Error('host bug') }); backchannel.rate('t1', 'up') }")
    assert "host bug" in str(error.value)
    page.wait_for_function("() => heard.length == 6")
    chat.wait("feedback", "t1", count=4)
    page.console[:] = [line for line in page.console if "host bug" not in line]


def test_on_and_comment_calls_queued_before_load_are_replayed(open_page, chat):
    stub = ("window.backchannel=window.backchannel||function(){(window.backchannel.q=window.backchannel.q||[]).push(arguments)};"
            + HOOKS + "backchannel('rate','t9','down');backchannel('comment','t9','from the chat');")
    chat.use_project(require_token=False)
    chat.trace("t9")
    page = open_page("", stub=stub)
    events = chat.wait("feedback", "t9", count=2)
    assert [(e["value"], e.get("comment")) for e in events] == [(0, None), (0, "from the chat")]
    assert page.evaluate("() => heard.map(([name, p]) => [name, p.comment ?? null, p.update])") == [
        ["feedback", None, False], ["feedback", "from the chat", True]]
    assert page.evaluate("() => [typeof backchannel('constructor'), typeof backchannel('__proto__'),"
                         " backchannel.rate('t9', '__proto__')]") == ["undefined", "undefined", None]


# --- abandonment ------------------------------------------------------------------------------------------------

def set_visibility(page, state: str) -> None:
    """What switching to another tab and back does to the page (headless pages are always visible)."""
    page.evaluate("""state => {
      Object.defineProperty(document, 'visibilityState', {value: state, configurable: true});
      Object.defineProperty(document, 'hidden', {value: state == 'hidden', configurable: true});
      document.dispatchEvent(new Event('visibilitychange'));
    }""", state)


PENDING = "() => Object.keys(localStorage).map(k => k.startsWith('bc_q_') && JSON.parse(localStorage[k]).a).find(Boolean)"


def test_a_tab_switch_and_back_is_not_abandonment(open_page, chat):
    page = open_page(chat.message("t1"), **{"data-abandon-after-ms": "60000"})
    chat.wait("shown", "t1")
    set_visibility(page, "hidden")
    pending = page.wait_for_function(PENDING).json_value()
    assert pending["e"]["type"] == "abandoned" and pending["e"]["trace_id"] == "t1"
    set_visibility(page, "visible")
    page.wait_for_function(f"() => !({PENDING})()")
    page.locator(part(page, "t1", "up")).click()
    page.close(run_before_unload=True)
    stored = chat.wait_stored("t1", lambda t: t["rating"])
    assert stored["signals"] == {"shown": 1} and [r["value"] for r in stored["rating"]] == [1]
    assert chat.events("abandoned") == []


def test_hidden_past_the_window_is_abandonment(open_page, chat):
    page = open_page(chat.message("t1"), **{"data-abandon-after-ms": "300"})
    chat.wait("shown", "t1")
    hidden_at = page.evaluate("() => Date.now()")
    set_visibility(page, "hidden")
    abandoned = chat.wait("abandoned", "t1")[0]
    assert abandoned["ts"] >= hidden_at and abandoned["token"] == chat.tokens["t1"]
    page.wait_for_function(f"() => !({PENDING})()")
    set_visibility(page, "visible")  # back too late: it stays sent, once
    page.close(run_before_unload=True)
    assert chat.wait_stored("t1", lambda t: "abandoned" in t["signals"])["signals"] == {"shown": 1, "abandoned": 1}


def crash(page) -> None:
    """The browser kills the hidden tab: its renderer dies, with no pagehide and no unload."""
    with page.expect_event("crash"):
        try:
            page.goto("chrome://crash")
        except PlaywrightError:
            pass  # the navigation never completes


def test_a_killed_hidden_tab_is_abandoned_by_the_next_visit_after_the_window(open_page, chat, browser):
    context = browser.new_context()
    page = open_page(chat.message("t1"), context=context, **{"data-abandon-after-ms": "1500"})
    chat.wait("shown", "t1")
    set_visibility(page, "hidden")
    pending = page.wait_for_function(PENDING).json_value()
    crash(page)
    wait_for(lambda: time.time() * 1000 > pending["until"], what="the window to pass")
    open_page("", context=context)  # a later visit: no message of its own
    abandoned = chat.wait("abandoned", "t1")
    assert [e["id"] for e in abandoned] == [pending["e"]["id"]]
    assert chat.wait_stored("t1", lambda t: "abandoned" in t["signals"])["signals"] == {"shown": 1, "abandoned": 1}
    context.close()


def test_a_killed_hidden_tab_whose_user_is_back_within_the_window_is_not_abandoned(open_page, chat, browser):
    context = browser.new_context()
    page = open_page(chat.message("t1"), context=context, **{"data-abandon-after-ms": "600000"})
    chat.wait("shown", "t1")
    set_visibility(page, "hidden")
    page.wait_for_function(PENDING)
    crash(page)
    later = open_page("", context=context)
    later.wait_for_function(f"() => !({PENDING})()")  # the dead tab's entry was taken, and its abandonment dropped
    later.evaluate("() => backchannel.flush()")
    assert chat.events("abandoned") == [] and chat.stored("t1")["signals"] == {"shown": 1}
    context.close()


# Installed before the widget's own listener: whatever the widget sends as the page goes away leaves with this marker
# (a second "shown" for t2), or before it.
MARKER_ON_PAGEHIDE = "<script>addEventListener('pagehide', () => backchannel.track('shown', 't2'))</script>"


def test_two_turns_are_not_abandonment(open_page, chat):
    page = open_page(chat.message("t1") + chat.message("t2"), before=MARKER_ON_PAGEHIDE,
                     **{"data-abandon-after-ms": "0"})
    chat.wait("shown", count=2)
    set_visibility(page, "hidden")
    assert page.evaluate(PENDING) is None
    page.close(run_before_unload=True)
    chat.wait_stored("t2", lambda t: [e["type"] for e in t["events"]] == ["shown", "shown"], what="the marker")
    assert chat.events("abandoned") == [] and chat.stored("t1")["signals"] == {"shown": 1}


# --- hostile pages and storage (issue 9) ------------------------------------------------------------------------

RECORD_PROTOTYPE = "<script>window.protoBefore = Object.getOwnPropertyNames(Object.prototype).sort().join()</script>"


@pytest.mark.parametrize("trace", ["__proto__", "constructor", "prototype"])
def test_a_trace_id_naming_a_prototype_property_is_just_a_trace(open_page, chat, trace):
    page = open_page(chat.message(trace) + chat.message("t1"), head=RECORD_PROTOTYPE)
    chat.wait("shown", count=2)
    assert host_count(page, trace) == 1 and host_count(page, "t1") == 1
    page.locator(part(page, trace, "up")).click()
    page.locator(part(page, "t1", "down")).click()
    assert [e["trace_id"] for e in chat.wait("feedback", count=2)] == [trace, "t1"]
    assert page.evaluate("() => Object.getOwnPropertyNames(Object.prototype).sort().join() == protoBefore")
    assert page.evaluate("() => Object.keys({}).length + Object.keys(Object.prototype).length") == 0
    assert [r["value"] for r in chat.stored(trace)["rating"]] == [1]


def warnings(page) -> list[str]:
    return [line for line in page.console if line.startswith("warning: backchannel")]


def test_an_event_that_can_never_be_sent_is_dropped_with_one_warning(open_page, chat):
    chat.use_project(require_token=False)
    chat.trace("t1")
    page = open_page("")
    page.evaluate("() => { backchannel.track('copied', 't1', {length: 1, pad: 'x'.repeat(40000)});"
                  " backchannel.track('copied', 't1', {length: 2}); return backchannel.flush() }")
    assert [e["length"] for e in chat.wait("copied", "t1")] == [2]
    assert len(warnings(page)) == 1 and "32 KiB" in warnings(page)[0]


def seed(entries: dict[str, str]) -> str:
    """A script that writes raw localStorage entries before the widget loads."""
    return f"<script>for (const [k, v] of Object.entries({json.dumps(entries)})) localStorage.setItem(k, v)</script>"


def test_garbage_and_poisoned_entries_in_storage_are_dropped(open_page, chat):
    chat.use_project(require_token=False)
    chat.trace("t1")
    good = {"id": "0190f5a4-0000-7000-8000-000000000001", "type": "copied", "trace_id": "t1", "ts": int(time.time() * 1000),
            "session_id": "s-1", "length": 3}
    huge = {**good, "id": "0190f5a4-0000-7000-8000-000000000002", "pad": "x" * 40000}
    prefix = f"bc_q_{chat.pk}_"
    page = open_page("", before="<script>sessionStorage.setItem('bc_tab', 'mine')</script>" + seed({
        prefix + "mine": '{"q":"str"}', prefix + "gone-1": "not json", prefix + "gone-2": '{"q":{"length":2}}',
        prefix + "gone-3": json.dumps({"q": [5, None, "x", {}, huge, good], "a": {"until": "soon", "e": 7}}),
    }))
    assert [e["id"] for e in chat.wait("copied", "t1")] == [good["id"]]
    page.wait_for_function(f"() => !Object.keys(localStorage).some(k => k.startsWith('{prefix}gone'))")


def test_the_queue_is_capped_oldest_first_and_counted(open_page, chat):
    chat.use_project(require_token=False)
    page = open_page("")
    page.route("**/v1/events**", lambda route: route.abort())  # nothing gets out
    page.evaluate("() => { for (let i = 0; i < 520; i++) backchannel.track('copied', 't' + i, {length: 1}) }")
    queued = page.evaluate("() => Object.keys(localStorage).filter(k => k.startsWith('bc_q_'))"
                           ".flatMap(k => JSON.parse(localStorage[k]).q.map(e => e.trace_id))")
    assert len(queued) == 500 and queued[0] == "t20" and queued[-1] == "t519"
    dropped = [line for line in warnings(page) if "queue full" in line]
    assert dropped and dropped[-1].endswith("queue full: dropped 20")  # counted: 20 in all


def test_batches_are_measured_in_utf8_bytes(open_page, chat):
    chat.use_project(require_token=False)
    for i in range(25):
        chat.trace(f"t{i}")
    page = open_page("", **{"data-session-id": "s" * 200})
    # 20 such events are 27,000 characters but 67 KB of UTF-8 (3 bytes a character): over both 64 KiB limits.
    comment = "慢" * 999
    page.evaluate("c => { for (let i = 0; i < 25; i++) backchannel.rate('t' + i, 'down', {comment: c}) }", comment)
    wait_for(lambda: page.evaluate("() => backchannel.flush().then(() => true)") and len(chat.delivered()) == 25,
             what="25 feedback events")
    posts = [r for r in chat.requests if r["method"] == "POST"]
    assert len(posts) >= 2 and all(r["status"] == 200 for r in posts)
    assert all(len(r["body"].encode()) <= 65536 for r in posts)
    assert chat.stored("t24")["rating"][0]["comment"] == comment
