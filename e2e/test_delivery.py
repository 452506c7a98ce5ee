"""Delivery: events survive going offline and a reload, back off on 429, and wait for consent."""

from __future__ import annotations

import json
import time

import pytest
from playwright.sync_api import Page, Route

from e2e.chats import BareChat, DemoChat, events_of, flush
from e2e.stack import duplicates

QUEUED = """() => Object.keys(localStorage).filter(k => k.startsWith("bc_q_"))
    .flatMap(k => JSON.parse(localStorage.getItem(k)).q)"""


def events_requests(page: Page) -> list[dict]:
    """Every POST /v1/events the page's context makes that got an answer: {"status", "ids"}."""
    seen: list[dict] = []

    def finished(request) -> None:
        if "/v1/events" in request.url and request.method == "POST":
            response = request.response()
            ids = [e["id"] for e in json.loads(request.post_data)["events"]]
            seen.append({"status": response.status if response else None, "ids": ids})

    page.context.on("requestfinished", finished)
    return seen


@pytest.mark.console_errors  # the requests made while offline fail
@pytest.mark.parametrize("online_at_reload", [False, True], ids=["reload-offline", "reload-online"])
def test_offline_then_reload_delivers_exactly_once(demo: DemoChat, online_at_reload: bool):
    page = demo.page
    answered = events_requests(page)
    trace = demo.answer_with_thumbs("How should I choose a database for a small web app?")
    demo.stored(trace, lambda t: events_of(t, "shown"))

    resent = duplicates(demo.stack)
    page.context.set_offline(True)
    demo.part(trace, "up").click()
    flush(page)
    [vote] = [e for e in page.evaluate(QUEUED) if e["type"] == "feedback"]  # kept in localStorage meanwhile
    assert page.evaluate("() => navigator.onLine") is False

    if online_at_reload:
        # Back online just before the reload: the page that leaves sends it, or the next one does; not both.
        page.context.set_offline(False)
        page.reload()
    else:
        with pytest.raises(Exception, match="ERR_INTERNET_DISCONNECTED"):
            page.reload()
        page.context.set_offline(False)
        demo.open()

    stored = demo.stored(trace, lambda t: events_of(t, "feedback"))
    assert [e["id"] for e in events_of(stored, "feedback")] == [vote["id"]]
    ids = [e["id"] for e in stored["events"]]
    assert len(ids) == len(set(ids)) == 2
    assert stored["rating"][0]["value"] == 1
    page.wait_for_function(f"() => !({QUEUED})().length")  # the queue is empty once delivered
    # A marker sent now (the next answer's `shown`) is stored after any second copy of the vote already on its way.
    marker = demo.ask("And which one would you pick for a side project?")
    demo.stored(marker, lambda t: events_of(t, "shown"))
    # The gateway answers a re-sent event id `duplicate`: none came, so the vote was sent once.
    assert duplicates(demo.stack) == resent
    accepted = [r for r in answered if r["status"] == 200 and vote["id"] in r["ids"]]
    assert len(accepted) <= 1, f"the vote was delivered {len(accepted)} times: {answered}"


@pytest.mark.console_errors  # the 429
def test_429_backs_off_for_retry_after_then_delivers(demo: DemoChat):
    page = demo.page
    attempts: list[tuple[float, list[str]]] = []

    def events(route: Route) -> None:
        attempts.append((time.monotonic(), [e["id"] for e in json.loads(route.request.post_data)["events"]]))
        if len(attempts) > 1:
            return route.continue_()
        origin = route.request.headers.get("origin", "*")
        # As the gateway answers a 429: CORS headers with Retry-After exposed, so the widget can read it.
        route.fulfill(status=429, content_type="application/problem+json",
                      headers={"Retry-After": "1", "Access-Control-Allow-Origin": origin,
                               "Access-Control-Expose-Headers": "Retry-After", "Vary": "Origin"},
                      body=json.dumps({"type": "urn:backchannel:problem:rate_limited", "title": "Too many requests",
                                       "status": 429, "detail": "slow down"}))

    page.route(lambda url: "/v1/events" in url, events)
    trace = demo.answer_with_thumbs("How should I choose a database for a small web app?")
    demo.part(trace, "up").click()
    flush(page)
    deadline = time.monotonic() + 10
    while len(attempts) < 2 and time.monotonic() < deadline:
        flush(page)  # keep asking: the widget itself must hold back until Retry-After has passed
    assert len(attempts) >= 2, "the widget never retried"
    (first, refused), (retry, resent) = attempts[:2]
    assert retry - first >= 0.95, f"retried {retry - first:.2f} s after a 429 with Retry-After: 1"
    assert set(refused) <= set(resent)

    stored = demo.stored(trace, lambda t: events_of(t, "feedback"))
    ids = [e["id"] for e in stored["events"]]
    assert len(ids) == len(set(ids)) and set(refused) <= set(ids)
    assert len(events_of(stored, "feedback")) == 1


def test_nothing_is_sent_before_consent(bare: BareChat):
    page = bare.page
    posts: list[str] = []
    page.on("request", lambda r: "/v1/events" in r.url and posts.append(r.method))
    bare.open(consent="pending")
    trace = bare.ask("How should I choose a database for a small web app?")
    bare.shown(trace)
    bare.part(trace, "up").click()
    # flush() is what the widget's timer calls too; its promise settles once whatever it sent has landed, so any
    # request it made has been seen by now.
    page.evaluate("() => backchannel.flush()")
    assert posts == []
    assert page.evaluate("() => Object.keys(localStorage).filter(k => k.startsWith('bc_q_'))") == []
    assert bare.trace(trace)["events"] == []

    page.evaluate("() => backchannel.consent(true)")
    stored = bare.stored(trace, lambda t: t["rating"])
    assert stored["rating"][0]["value"] == 1
    assert {e["type"] for e in stored["events"]} == {"shown", "feedback"}
    assert "POST" in posts
