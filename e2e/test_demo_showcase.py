"""Quill as the widget's showcase: themed through the widget's custom properties, usable on a 375 px phone, and
screenshotted at 375 and 1280 px in both colour schemes (test-artifacts/quill-<width>-<scheme>.png)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from e2e.chats import TIMING_PROBE, DemoChat

PROMPT = "How should I choose a database for a small web app?"
# The page's own colours (chat.css) that the widget takes on through --bc-bg, --bc-border and --bc-accent.
QUILL = {"light": {"surface": "rgb(255, 255, 255)", "border": "rgb(227, 230, 238)", "accent": "rgb(91, 91, 214)"},
         "dark": {"surface": "rgb(23, 26, 35)", "border": "rgb(42, 47, 61)", "accent": "rgb(139, 139, 245)"}}


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [375, 1280])
def test_themed_and_holding_up_at_each_width(new_context, stack, artifacts: Path, width: int, scheme: str):
    context = new_context(color_scheme=scheme, viewport={"width": width, "height": 740 if width < 600 else 860})
    context.add_init_script(TIMING_PROBE)
    demo = DemoChat(stack, context.new_page())
    demo.open(model="model-a")
    page = demo.page

    header, composer = page.locator(".topbar"), page.locator("#composer")
    brand, meta = page.locator(".brand").bounding_box(), page.locator(".topbar-meta").bounding_box()
    assert header.bounding_box()["height"] < 72 and abs(brand["y"] - meta["y"]) < 16, "the header wrapped"
    assert page.locator("#prompt").bounding_box()["height"] < 48, "the composer's placeholder wrapped"
    assert composer.bounding_box()["height"] < 110
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width, "the page scrolls sideways"

    trace = demo.ask(PROMPT)
    if width < 600:  # a long first answer: the reasons open below the fold unless the page brings them up
        demo.ask("And how would I move my data later if I outgrow it?")
        trace = demo.wait_answer(2)
    demo.part(trace, "down").click()
    expect(demo.part(trace, "reason").first).to_be_in_viewport()
    expect(demo.part(trace, "comment")).to_be_in_viewport()

    up = demo.part(trace, "up").evaluate(
        "el => { const s = getComputedStyle(el); return [s.backgroundColor, s.borderTopColor]; }")
    pressed = demo.part(trace, "down").evaluate("el => getComputedStyle(el).backgroundColor")
    assert up == [QUILL[scheme]["surface"], QUILL[scheme]["border"]] and pressed == QUILL[scheme]["accent"]
    page.screenshot(path=artifacts / f"quill-{width}-{scheme}.png", animations="disabled")
    assert (artifacts / f"quill-{width}-{scheme}.png").stat().st_size > 0
