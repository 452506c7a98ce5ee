"""Implicit signals that need an app's own features: edits of an AI draft (both apps) and rephrased prompts (demo)."""

from __future__ import annotations

import re

import pytest

from e2e.chats import Chat, DemoChat, events_of
from e2e.stack import store_text

ADDED = " P.S. Thursday at three works for the whole team."


def test_editing_a_draft(chat: Chat):
    chat.open()
    trace = chat.ask("Reply to Sam about moving the launch meeting to Thursday", template="draft")
    draft = chat.page.locator(f'[data-feedback-draft="{trace}"]')
    draft.click()
    chat.page.keyboard.press("Control+End")
    chat.page.keyboard.type(ADDED)
    chat.page.keyboard.press("Tab")  # losing focus sends the final edit ratio
    final = draft.evaluate("d => d.value != null ? d.value : d.innerText")
    expected = round(len(ADDED) / len(final), 3)  # an append: edit distance = what was added

    stored = chat.stored(trace, lambda t: any(e["edit_ratio"] == expected for e in events_of(t, "edited")))
    ratios = [e["edit_ratio"] for e in events_of(stored, "edited")]
    assert all(0 < r <= expected for r in ratios) and ratios[-1] == expected, ratios
    assert stored["signals"]["edited"] == 1
    if chat.name == "demo":
        chat.page.click("[data-testid=draft-send]")  # submitting an unchanged draft sends nothing new
        chat.page.get_by_test_id("draft-status").filter(has_text="Sent").wait_for()
    dump = store_text(chat.stack.db)
    assert ADDED.strip() not in dump and final[:40] not in dump


def similarity(a: str, b: str) -> float:
    """The widget's measure: Jaccard similarity of word 1- and 2-shingles."""
    def shingles(x: str) -> set[str]:
        words = [w for w in re.split(r"[^\w]+", x.lower()) if w]
        return set(words) | {f"{p} {q}" for p, q in zip(words, words[1:])}
    a_set, b_set = shingles(a), shingles(b)
    return round(len(a_set & b_set) / len(a_set | b_set), 3)


FIRST = "How should I choose a database for a small web app?"
AGAIN = "How do I choose a database for a small web app?"


def test_rephrased_prompt_is_logged_on_the_previous_answer(demo: DemoChat):
    demo.open()
    first = demo.ask(FIRST)
    second = demo.ask(AGAIN)
    stored = demo.stored(first, lambda t: events_of(t, "rephrased"))
    [rephrased] = events_of(stored, "rephrased")
    assert rephrased["similarity"] == similarity(FIRST, AGAIN) >= 0.5
    assert set(rephrased) <= {"id", "type", "session_id", "ts", "received_at", "value", "reason", "comment",
                              "similarity", "dwell_ms"}
    assert FIRST not in store_text(demo.stack.db) and AGAIN not in store_text(demo.stack.db)
    # The second answer has no follow-up: nothing is logged against it.
    demo.shown(second)
    assert events_of(demo.stored(second, lambda t: events_of(t, "shown")), "rephrased") == []


@pytest.mark.parametrize("unrelated", [False, True], ids=["copied", "unrelated-prompt"])
def test_no_rephrase_after_a_copy_or_a_new_topic(demo: DemoChat, unrelated: bool):
    demo.open()
    first = demo.ask(FIRST)
    if unrelated:
        second = demo.ask("Summarize the plot of Hamlet in three lines")
    else:
        demo.action(first, "copy").click()
        demo.stored(first, lambda t: events_of(t, "copied"))
        second = demo.ask(AGAIN)
    # Events leave in order: once the second answer's `shown` is stored, a rephrase sent before it would be too.
    demo.shown(second)
    demo.stored(second, lambda t: events_of(t, "shown"))
    assert events_of(demo.trace(first), "rephrased") == []
