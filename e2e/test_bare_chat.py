"""What only the bare static page exercises: messages present at load without data-streaming, a message
re-rendered by its app, and a site that honours Do-Not-Track / Global Privacy Control."""

from __future__ import annotations

import json

from e2e.chats import BareChat, events_of

GPC = "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true});"


def turn(bare: BareChat, trace_id: str, text: str) -> dict:
    token = bare.stack.log_trace(trace_id, bare.session, bare.secret_key)
    bare.texts[trace_id] = text
    return {"prompt": "What is a bare page?", "trace_id": trace_id, "token": token, "text": text}


def test_message_present_at_load_gets_thumbs_once_it_stops_changing(bare: BareChat):
    first = turn(bare, "bare-at-load-" + bare.session, "A page with no framework at all.")
    bare.open(delay="300", turns=json.dumps([first]))
    bare.shown(first["trace_id"])
    marks = bare.page.evaluate("t => window.__bcMarks[t] || {}", first["trace_id"])
    # No data-streaming: done once unchanged for 1 s, then the delay.
    assert marks["drawn"] >= 1000 + 300
    stored = bare.stored(first["trace_id"], lambda t: events_of(t, "shown"))
    assert len(events_of(stored, "shown")) == 1


def test_a_rerendered_message_keeps_one_widget(bare: BareChat):
    bare.open()
    trace = bare.ask("What is a bare page?")
    bare.shown(trace)
    # The app throws the element away and renders a new one for the same trace (as frameworks do).
    bare.page.evaluate("""t => {
        const old = document.querySelector(`article[data-trace-id="${t}"]`);
        const copy = old.cloneNode(true);
        copy.querySelectorAll("backchannel-feedback").forEach(h => h.remove());
        old.replaceWith(copy);
    }""", trace)
    bare.page.wait_for_function("""t => document.querySelector(`article[data-trace-id="${t}"]`)
        .querySelectorAll("backchannel-feedback").length === 1""", arg=trace)
    assert bare.page.locator("backchannel-feedback").count() == 1
    bare.part(trace, "up").click()
    stored = bare.stored(trace, lambda t: t["rating"])
    assert len(events_of(stored, "shown")) == 1 and stored["rating"][0]["value"] == 1


def test_respects_global_privacy_control(bare: BareChat):
    page = bare.page
    page.context.add_init_script(GPC)
    page.clock.install()  # the page's timers, run on demand below
    requests: list[str] = []
    page.on("request", lambda r: bare.stack.gateway_url in r.url and requests.append(r.url))
    bare.open(dnt="1")
    page.wait_for_function("() => window.backchannel && window.backchannel.v")  # the widget has started
    trace = bare.ask("What is a bare page?")
    page.evaluate("t => { backchannel.rate(t, 'up'); return backchannel.flush(); }", trace)
    page.clock.run_for(5000)  # past the delay (300 ms) and the 2 s flush timer: whatever they would do is done
    assert bare.answer(trace).locator("backchannel-feedback").count() == 0
    assert [u for u in requests if "/v1/widget" not in u] == []
    assert bare.trace(trace)["events"] == []
