"""Quill's conversational follow-up (host events): after a thumbs-down it asks what it could have done better, and
the user's next message becomes that vote's comment, not a new prompt."""

from __future__ import annotations

from e2e.chats import DemoChat, events_of

PROMPT = "How should I choose a database for a small web app?"
QUESTION = "What could I have done better?"


def test_the_reply_to_the_follow_up_is_the_votes_comment(demo: DemoChat):
    prompts: list[str] = []
    demo.page.on("request", lambda r: "/api/chat" in r.url and prompts.append(r.post_data_json["prompt"]))
    demo.open(model="model-b")
    trace = demo.ask(PROMPT)
    demo.part(trace, "down").click()
    demo.page.get_by_test_id("follow-up").filter(has_text=QUESTION).wait_for()

    reply = "Give me a concrete recommendation, not a list of caveats"
    demo.page.fill("#prompt", reply)
    demo.page.keyboard.press("Enter")
    demo.page.get_by_test_id("follow-up-thanks").wait_for()
    stored = demo.stored(trace, lambda t: t["rating"] and t["rating"][0]["comment"])
    [rating] = stored["rating"]
    assert (rating["value"], rating["comment"]) == (0, reply)
    assert [v.get("comment") for v in events_of(stored, "feedback")] == [None, reply]
    assert prompts == [PROMPT] and demo.answers() == 1, "the reply was sent to the model as a prompt"

    # The next message is a prompt again.
    second = demo.ask("Which one would you pick for a side project?")
    assert second != trace and prompts[-1] == "Which one would you pick for a side project?"


def test_no_follow_up_after_a_thumbs_up_and_none_left_after_changing_to_up(demo: DemoChat):
    demo.open()
    trace = demo.ask(PROMPT)
    demo.part(trace, "down").click()
    demo.page.get_by_test_id("follow-up").wait_for()
    demo.part(trace, "up").click()  # changed their mind: the question is withdrawn
    demo.page.wait_for_function("() => !document.getElementById('composer').hasAttribute('data-follow-up')")
    second = demo.ask("Which one would you pick for a side project?")
    assert demo.answers() == 2 and second != trace
    assert demo.page.get_by_test_id("follow-up").count() == 1
