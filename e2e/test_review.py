"""The reviewer page in Chromium against the running demo: keyboard only from sign-in to the last label, a model's
`<script>` shown as text, no axe violations, and two reviewers who never hold the same item."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, expect

from e2e.chats import DemoChat
from e2e.stack import Stack

HOSTILE = 'Sure.<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def add_reviewer(stack: Stack, name: str) -> str:
    out = subprocess.run([sys.executable, "-m", "gateway", "reviewer", "add", "--project", stack.public_key, "--name",
                          name, "--db", stack.db], capture_output=True, text=True, check=True, timeout=60).stdout
    return json.loads(out)["reviewer_key"]


def queue_of_traces(stack: Stack, outputs: list[str], **spec: Any) -> str:
    """A queue of fresh traces of a template of their own (the stack is shared with other tests)."""
    template = f"review-{uuid.uuid4().hex[:8]}"
    for i, output in enumerate(outputs):
        stack.log_trace(f"{template}-{i}", f"session-{template}-{i}", stack.secret_key, template=template,
                        model="model-a", input=[{"role": "system", "content": "Answer briefly."},
                                                {"role": "user", "content": f"Question {i}?"}], output=output)
    with stack.api() as api:
        response = api.post("/v1/queues", json={
            "name": f"Queue {template}", "filter": {"template": template}, "instructions": "Label what is wrong.",
            "sampling": {"size": len(outputs), "random_share": 0}, **spec})
        response.raise_for_status()
        queue_id = response.json()["id"]
        assert api.post(f"/v1/queues/{queue_id}/fill").json()["added"] == len(outputs)
    return queue_id


def sign_in(page: Page, stack: Stack, key: str, queue_id: str) -> None:
    page.goto(f"{stack.gateway_url}/review")
    # The key field has focus on arrival (autofocus may land after the load event `goto` waits for): type, Enter.
    page.wait_for_function("document.activeElement !== null && document.activeElement.id === 'key'")
    page.keyboard.type(key)
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Queues").wait_for()
    page.goto(f"{stack.gateway_url}/review?queue={queue_id}")


def shown_trace(page: Page) -> str:
    expect(page.locator("#status")).to_contain_text("Lease held")
    return page.locator(".facts dt:text-is('Trace') + dd").first.inner_text()


def axe_violations(page: Page) -> list[dict[str, Any]]:
    results = Axe().run(page)
    return [{"id": v["id"], "nodes": [n["target"] for n in v["nodes"]][:5]} for v in results.response["violations"]]


def test_a_reviewer_labels_three_items_with_the_keyboard_only(stack: Stack, page: Page, artifacts: Path):
    queue_id = queue_of_traces(stack, ["Paris is the capital of France.", HOSTILE, "See https://made-up.example/x"])
    sign_in(page, stack, add_reviewer(stack, f"kb-{uuid.uuid4().hex[:6]}"), queue_id)
    expect(page.locator(".instructions")).to_contain_text("Label what is wrong.")
    expect(page.locator(".keys")).to_contain_text("complete the item and load the next")
    seen = []
    for step in range(3):
        trace_id = shown_trace(page)
        assert trace_id not in seen
        seen.append(trace_id)
        expect(page.locator(".turn.role-system .text")).to_have_text("Answer briefly.")
        output = page.locator(".response .output")
        if trace_id.endswith("-1"):
            # The hostile output is text on the page: the markup shows, nothing of it ran or was parsed.
            expect(output).to_have_text(HOSTILE)
            assert output.locator("script, img").count() == 0
            assert page.evaluate("window.__pwned") is None
            assert axe_violations(page) == []
            page.screenshot(path=str(artifacts / "review-single.png"), full_page=True)
        page.keyboard.press(str(step + 1))  # toggle the step's label: factual_error, missed_instructions, tone
        expect(page.locator(f"#label-{step + 1}")).to_be_checked()
        if step == 0:
            page.keyboard.press("1")  # and back off: the first item ends up with no label...
            page.keyboard.press("7")  # ...but `other`
            page.keyboard.press("n")
            assert page.evaluate("document.activeElement.id") == "note"
            page.keyboard.type("checked by keyboard")
        page.keyboard.press("Enter")  # complete; the next item loads
        if step < 2:
            expect(page.locator(".facts dt:text-is('Trace') + dd").first).not_to_have_text(trace_id)
    expect(page.locator("#status")).to_have_text("Nothing left in this queue for you. Thank you!")
    with stack.api() as api:
        state = api.get(f"/v1/queues/{queue_id}").json()
        exported = api.get("/v1/exports/evals", params={"queue": queue_id}).text
    evals = [json.loads(line) for line in exported.splitlines()]
    assert state["counts"] == {"pending": 0, "leased": 0, "done": 3, "skipped": 0}
    labels = {line["trace_id"]: (line["labels"], line["notes"]) for line in evals}
    assert labels == {seen[0]: (["other"], ["checked by keyboard"]), seen[1]: (["missed_instructions"], []),
                      seen[2]: (["tone"], [])}


def test_a_second_reviewer_never_sees_the_item_the_first_holds(stack: Stack, page: Page, browser: Browser):
    queue_id = queue_of_traces(stack, ["one", "two"])
    sign_in(page, stack, add_reviewer(stack, f"first-{uuid.uuid4().hex[:6]}"), queue_id)
    held = shown_trace(page)
    other = browser.new_context()
    try:
        second = other.new_page()
        sign_in(second, stack, add_reviewer(stack, f"second-{uuid.uuid4().hex[:6]}"), queue_id)
        theirs = shown_trace(second)
        assert theirs != held
        second.keyboard.press("s")  # skipping gives it back, but never the first reviewer's item
        expect(second.locator("#status")).to_have_text("Nothing left in this queue for you. Thank you!")
        assert axe_violations(second) == []
    finally:
        other.close()
    assert shown_trace(page) == held  # still the first reviewer's


def test_pairwise_items_side_by_side_choose_with_a_b_t(stack: Stack, page: Page, artifacts: Path):
    template = f"pair-{uuid.uuid4().hex[:8]}"
    stack.log_trace(f"{template}-0", f"s-{template}", stack.secret_key, template=template, input="Name a colour",
                    output="Red")
    stack.log_trace(f"{template}-1", f"s-{template}", stack.secret_key, template=template, input="Name a colour",
                    output="Blue", parent_trace_id=f"{template}-0")
    with stack.api() as api:
        queue_id = api.post("/v1/queues", json={"name": "Pairs", "kind": "pairwise", "filter": {"template": template},
                                                "sampling": {"size": 1, "random_share": 0}}).json()["id"]
        assert api.post(f"/v1/queues/{queue_id}/fill").json()["added"] == 1
    sign_in(page, stack, add_reviewer(stack, f"pair-{uuid.uuid4().hex[:6]}"), queue_id)
    expect(page.locator("#status")).to_contain_text("Lease held")
    expect(page.get_by_role("region", name="Response A")).to_be_visible()
    expect(page.get_by_role("region", name="Response B")).to_be_visible()
    assert axe_violations(page) == []
    page.screenshot(path=str(artifacts / "review-pairwise.png"), full_page=True)
    page.keyboard.press("b")
    expect(page.locator("#preferred-b")).to_be_checked()
    page.keyboard.press("t")
    expect(page.locator("#preferred-tie")).to_be_checked()
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_have_text("Nothing left in this queue for you. Thank you!")
    with stack.api() as api:
        assert api.get(f"/v1/queues/{queue_id}").json()["counts"]["done"] == 1


def test_the_demos_regenerations_name_their_parent_and_pair_up(stack: Stack, demo: DemoChat):
    demo.open()
    first = demo.ask("What is a good name for a cat?")
    demo.action(first, "regenerate").click()
    second = demo.wait_answer(2)
    demo.action(second, "regenerate").click()
    third = demo.wait_answer(3)
    assert stack.trace(first)["parent_trace_id"] is None
    # Every regeneration names the first answer, so all three answer one prompt and pair up for review.
    assert stack.trace(second)["parent_trace_id"] == stack.trace(third)["parent_trace_id"] == first
