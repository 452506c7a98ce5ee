"""The README's example test (the Testing section quotes this file whole): a click, then what the gateway stored."""

from e2e.chats import DemoChat


def test_thumbs_down_with_a_reason_is_stored(demo: DemoChat, stored):
    demo.open(model="model-b")  # the weaker variant, no wait before the thumbs (?delay=0 by default)
    trace = demo.ask("How should I choose a database for a small web app?")
    demo.part(trace, "down").click()
    demo.part(trace, "reason").filter(has_text="Too long").click()
    trace_json = stored(trace, lambda t: t["rating"] and t["rating"][0]["reason"])  # GET /v1/traces/{id}
    assert trace_json["model"] == "model-b"
    assert (trace_json["rating"][0]["value"], trace_json["rating"][0]["reason"]) == (0, "too_long")
