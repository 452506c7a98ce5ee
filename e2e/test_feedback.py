"""The core checks, run against both apps (the demo and the bare static chat): thumbs and implicit signals,
each proven by what the gateway stored."""

from __future__ import annotations

import pytest

from e2e.chats import Chat, events_of
from e2e.stack import project_config, store_text

PROMPT = "How should I choose a database for a small web app?"


def reasons(chat: Chat) -> list[dict[str, str]]:
    return project_config(chat.stack, chat.public_key)["reasons"]


def test_thumbs_appear_only_after_the_delay(chat: Chat):
    delay = project_config(chat.stack, chat.public_key)["delay_ms"]
    assert delay == 2000
    chat.open(delay=None)  # the project's delay, not the suite's short one
    trace = chat.ask(PROMPT)
    assert not chat.part(trace, "up").count(), "thumbs drawn while the answer was still streaming"
    # The probe marks, on the page's clock, when data-streaming left "true" and when the thumbs were drawn.
    chat.page.wait_for_function("t => window.__bcMarks[t] && window.__bcMarks[t].drawn", arg=trace,
                                timeout=delay + 5000)
    marks = chat.page.evaluate("t => window.__bcMarks[t]", trace)
    waited = marks["drawn"] - marks["done"]
    assert delay - 5 <= waited <= delay + 1500, f"thumbs drawn {waited:.0f} ms after streaming ended"
    assert chat.part(trace, "down").is_visible()
    stored = chat.stored(trace, lambda t: events_of(t, "shown"))
    assert len(events_of(stored, "shown")) == 1 and stored["signals"] == {"shown": 1}


def test_thumbs_up(chat: Chat):
    trace = chat.answer_with_thumbs(PROMPT)
    chat.part(trace, "up").click()
    assert chat.part(trace, "up").get_attribute("aria-pressed") == "true"
    assert chat.part(trace, "down").get_attribute("aria-pressed") == "false"
    assert chat.part(trace, "thanks").inner_text() != ""

    stored = chat.stored(trace, lambda t: t["rating"])
    [rating] = stored["rating"]
    assert (rating["value"], rating["reason"], rating["comment"]) == (1, None, None)
    [vote] = events_of(stored, "feedback")
    assert vote["value"] == 1 and vote["dwell_ms"] >= 0
    assert vote["session_id"] == rating["session_id"] == stored["session_id"]


def test_thumbs_down_with_reason_and_comment(chat: Chat):
    options = reasons(chat)
    trace = chat.answer_with_thumbs(PROMPT)
    chat.part(trace, "down").click()
    assert chat.part(trace, "down").get_attribute("aria-pressed") == "true"
    offered = chat.part(trace, "reason")
    assert offered.all_inner_texts() == [r["label"] for r in options]
    reason = options[1]
    offered.filter(has_text=reason["label"]).click()
    stored = chat.stored(trace, lambda t: t["rating"] and t["rating"][0]["reason"] == reason["code"])
    assert stored["rating"][0]["value"] == 0 and stored["rating"][0]["comment"] is None

    comment = "Half as long would have been plenty"
    chat.part(trace, "comment").fill(comment)
    chat.part(trace, "submit").click()
    assert chat.part(trace, "thanks").inner_text() != ""
    assert not chat.part(trace, "reason").first.is_visible()
    stored = chat.stored(trace, lambda t: t["rating"][0]["comment"] is not None)
    [rating] = stored["rating"]
    assert (rating["value"], rating["reason"], rating["comment"]) == (0, reason["code"], comment)
    votes = events_of(stored, "feedback")
    assert [v["value"] for v in votes] == [0, 0, 0]
    assert [(v.get("reason"), v.get("comment")) for v in votes] == [
        (None, None), (reason["code"], None), (reason["code"], comment)]


def test_changing_the_vote_keeps_one_current_vote(chat: Chat):
    options = reasons(chat)
    trace = chat.answer_with_thumbs(PROMPT)
    chat.part(trace, "up").click()
    chat.stored(trace, lambda t: t["rating"] and t["rating"][0]["value"] == 1)

    chat.part(trace, "down").click()
    chat.part(trace, "reason").filter(has_text=options[0]["label"]).click()
    assert chat.part(trace, "up").get_attribute("aria-pressed") == "false"
    assert chat.part(trace, "down").get_attribute("aria-pressed") == "true"
    stored = chat.stored(trace, lambda t: t["rating"][0]["reason"] == options[0]["code"])
    [rating] = stored["rating"]  # one current vote per session
    assert rating["value"] == 0
    assert [v["value"] for v in events_of(stored, "feedback")] == [1, 0, 0]  # the log keeps the history

    chat.part(trace, "up").click()
    stored = chat.stored(trace, lambda t: t["rating"][0]["value"] == 1)
    [rating] = stored["rating"]
    assert rating["reason"] is None, "a new vote replaces the old one's reason"
    assert chat.part(trace, "up").get_attribute("aria-pressed") == "true"


def assert_not_stored(chat: Chat, *texts: str) -> None:
    dump = store_text(chat.stack.db)
    for text in texts:
        assert len(text) > 20 and text not in dump, f"{text[:40]!r}... reached the store"


def sent_bodies(chat: Chat) -> list[str]:
    bodies: list[str] = []
    chat.page.on("request", lambda r: "/v1/events" in r.url and bodies.append(r.post_data or ""))
    return bodies


def test_copy_by_keyboard_selection(chat: Chat):
    bodies = sent_bodies(chat)
    chat.open()
    trace = chat.ask(PROMPT)
    text = chat.text(trace)
    # Select all of the answer's text but its first three characters, then copy it the way a person would.
    selected = text.evaluate("""el => {
        const node = el.firstChild, range = document.createRange();
        range.setStart(node, 3);
        range.setEnd(node, node.length);
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        return String(getSelection());
    }""")
    chat.page.keyboard.press("Control+C")

    stored = chat.stored(trace, lambda t: events_of(t, "copied"))
    [copied] = events_of(stored, "copied")
    assert copied["length"] == len(selected.encode("utf-16-le")) // 2
    assert set(copied) <= {"id", "type", "session_id", "ts", "received_at", "value", "reason", "comment", "length",
                           "dwell_ms"}
    assert stored["signals"]["copied"] == 1
    assert_not_stored(chat, selected, selected[:40], selected[-40:])
    assert bodies and not any(selected[-40:] in b for b in bodies)


def test_copy_by_button(chat: Chat):
    bodies = sent_bodies(chat)
    chat.open()
    trace = chat.ask(PROMPT)
    answer = chat.text(trace).inner_text() if chat.name == "demo" else chat.texts[trace]  # type: ignore[attr-defined]
    chat.action(trace, "copy").click()
    stored = chat.stored(trace, lambda t: events_of(t, "copied"))
    [copied] = events_of(stored, "copied")
    expected = chat.text(trace).evaluate("el => el.textContent.length") if chat.name == "demo" \
        else chat.page.evaluate("() => window.bare.copied[0].length")
    assert copied["length"] == expected
    assert_not_stored(chat, answer, answer[:40], answer[-40:])
    assert bodies and not any(answer[-40:] in b for b in bodies)


def test_regenerate(chat: Chat):
    chat.open()
    trace = chat.ask(PROMPT)
    chat.action(trace, "regenerate").click()
    if chat.name == "demo":
        second = chat.wait_answer(2)
        assert second != trace and chat.answer(second).get_attribute("data-attempt") == "2"
    stored = chat.stored(trace, lambda t: events_of(t, "regenerated"))
    [regenerated] = events_of(stored, "regenerated")
    assert regenerated["attempt"] == 2
    assert stored["signals"]["regenerated"] == 1
    if chat.name == "demo":  # regenerating the regenerated answer brings attempt 3
        chat.action(second, "regenerate").click()
        assert chat.answer(chat.wait_answer(3)).get_attribute("data-attempt") == "3"
        [again] = events_of(chat.stored(second, lambda t: events_of(t, "regenerated")), "regenerated")
        assert again["attempt"] == 3


@pytest.mark.parametrize("leave", ["close", "navigate"])
def test_abandoned_when_the_page_is_left_after_one_unanswer_with_thumbs(chat: Chat, leave: str):
    chat.open()
    trace = chat.ask(PROMPT)
    if leave == "close":
        chat.page.close(run_before_unload=True)
    else:
        chat.page.goto("about:blank")
    # Only the request sent while the page went away can bring it: nobody is left to flush.
    stored = chat.stack.wait_trace(trace, lambda t: events_of(t, "abandoned"), secret_key=chat.secret_key)
    assert len(events_of(stored, "abandoned")) == 1 and stored["signals"]["abandoned"] == 1


# A pagehide listener installed before the widget's: it queues a second `shown` for the page's answer, so whatever
# the widget sends as the page goes away leaves in the same request as this marker, or in an earlier one.
MARKER_ON_PAGEHIDE = """addEventListener("pagehide", () => {
    const t = document.querySelector("article[data-trace-id]")?.getAttribute("data-trace-id");
    if (t && window.backchannel && window.backchannel.track) backchannel.track("shown", t);
});"""


@pytest.mark.parametrize("positive", ["up", "copy"])
def test_not_abandoned_after_a_positive_action(chat: Chat, positive: str):
    chat.page.add_init_script(MARKER_ON_PAGEHIDE)
    chat.open()
    trace = chat.ask(PROMPT)
    chat.shown(trace)
    if positive == "up":
        chat.part(trace, "up").click()
    else:
        chat.action(trace, "copy").click()
    chat.stored(trace, lambda t: events_of(t, "shown") and events_of(t, "feedback" if positive == "up" else "copied"))
    chat.page.close(run_before_unload=True)
    stored = chat.stack.wait_trace(trace, lambda t: len(events_of(t, "shown")) == 2, secret_key=chat.secret_key,
                                   what="the marker sent as the page went away")
    assert events_of(stored, "abandoned") == []
