"""The widget's UI in the host page: isolated from host CSS, accessible (axe-core, keyboard only), themed by the
preferred colour scheme."""

from __future__ import annotations

from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page

from e2e.chats import TIMING_PROBE, Chat, DemoChat, focused
from e2e.stack import project_config

PROMPT = "How should I choose a database for a small web app?"

HOSTILE_CSS = """
* { all: unset !important; color: red !important; font-size: 40px !important; }
button { display: none !important; }
backchannel-feedback, backchannel-feedback * { display: none !important; visibility: hidden !important; }
[part], [part=up], [aria-pressed] { display: none !important; }
"""

PROPERTIES = ["display", "visibility", "opacity", "color", "backgroundColor", "fontSize", "fontFamily", "width",
              "height", "borderTopWidth", "borderTopStyle", "paddingTop", "cursor"]


def computed(chat: Chat, trace: str, part: str) -> dict:
    style = chat.part(trace, part).evaluate(
        "(el, props) => { const s = getComputedStyle(el); return Object.fromEntries(props.map(p => [p, s[p]])); }",
        PROPERTIES)
    box = chat.part(trace, part).bounding_box()
    return {**style, "box": (round(box["width"]), round(box["height"]))}


def test_host_css_cannot_restyle_the_widget(chat: Chat):
    trace = chat.answer_with_thumbs(PROMPT)
    clean = {part: computed(chat, trace, part) for part in ("up", "down")}
    assert clean["up"]["display"] != "none" and clean["up"]["box"][0] > 0

    chat.page.add_style_tag(content=HOSTILE_CSS)
    assert chat.answer(trace).locator("[data-feedback-action=copy]").count() == 0 or \
        not chat.action(trace, "copy").is_visible(), "the hostile CSS did not apply to the host page"
    assert {part: computed(chat, trace, part) for part in ("up", "down")} == clean
    assert chat.part(trace, "up").is_visible()
    chat.part(trace, "up").click()  # and it still works
    assert chat.stored(trace, lambda t: t["rating"])["rating"][0]["value"] == 1

    # What does reach inside is the theming the widget offers: its custom properties (and its ::part()s).
    chat.page.add_style_tag(content="backchannel-feedback { --bc-bg: rgb(1, 2, 3); --bc-radius: 3px; }")
    themed = chat.part(trace, "down").evaluate(
        "el => [getComputedStyle(el).backgroundColor, getComputedStyle(el).borderTopLeftRadius]")
    assert themed == ["rgb(1, 2, 3)", "3px"]


def test_widget_css_does_not_leak_into_the_host(demo: DemoChat):
    demo.open()
    send = demo.page.locator("#send")
    props = "(el, props) => { const s = getComputedStyle(el); return props.map(p => s[p]); }"
    before = send.evaluate(props, PROPERTIES)
    trace = demo.ask(PROMPT)
    demo.shown(trace)
    demo.part(trace, "down").click()  # the reason panel's styles are in use too
    assert send.evaluate(props, PROPERTIES) == before
    # The widget's sheet is adopted by its shadow roots only: the document gains no stylesheet.
    assert demo.page.evaluate("""() => document.adoptedStyleSheets.length === 0 &&
        document.styleSheets.length === document.querySelectorAll("link[rel=stylesheet], style").length""")


def assert_no_violations(page: Page, what: str, context: object = None) -> None:
    results = Axe().run(page, context=context)
    assert results.violations_count == 0, f"axe-core found violations {what}:\n{results.generate_report()}"


def test_axe_finds_no_violations(chat: Chat):
    trace = chat.answer_with_thumbs(PROMPT)
    # The demo page is checked whole; the bare page is a deliberately plain host, so only the widget is checked.
    scope = None if chat.name == "demo" else {"include": [[f'article[data-trace-id="{trace}"] backchannel-feedback']]}
    assert_no_violations(chat.page, "with the thumbs shown", scope)
    chat.part(trace, "down").click()
    chat.part(trace, "comment").wait_for()
    assert_no_violations(chat.page, "with the reason panel open", scope)
    chat.part(trace, "submit").click()
    assert_no_violations(chat.page, "after the thanks", scope)


def luminance(css: str) -> float:
    r, g, b = (float(x) for x in css[css.index("(") + 1:css.index(")")].split(",")[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_light_and_dark_screenshots(new_context, stack, artifacts: Path):
    colours = {}
    for scheme in ("light", "dark"):
        context = new_context(color_scheme=scheme, viewport={"width": 900, "height": 700})
        try:
            context.add_init_script(TIMING_PROBE)
            chat = DemoChat(stack, context.new_page())
            chat.open()
            trace = chat.ask(PROMPT)
            chat.shown(trace)
            chat.part(trace, "down").click()
            chat.part(trace, "comment").wait_for()
            widget = chat.answer(trace).locator("backchannel-feedback")
            widget.screenshot(path=artifacts / f"widget-{scheme}.png", animations="disabled")
            chat.answer(trace).screenshot(path=artifacts / f"widget-message-{scheme}.png", animations="disabled")
            colours[scheme] = {part: chat.part(trace, part).evaluate(
                "el => { const s = getComputedStyle(el); return [s.color, s.backgroundColor]; }")
                for part in ("up", "down", "submit", "comment")}
        finally:
            context.close()
    for scheme in ("light", "dark"):
        assert (artifacts / f"widget-{scheme}.png").stat().st_size > 0
    for part in colours["light"]:
        light, dark = colours["light"][part], colours["dark"][part]
        assert light != dark, f"{part} looks the same in both schemes: {light}"
    # Unpressed controls: dark text on a light background in light mode, the other way round in dark mode.
    (fg_light, bg_light), (fg_dark, bg_dark) = colours["light"]["up"], colours["dark"]["up"]
    assert luminance(fg_light) < luminance(bg_light) and luminance(fg_dark) > luminance(bg_dark)


def press_until(page: Page, key: str, name: str, trace: str | None, limit: int = 40) -> None:
    for _ in range(limit):
        page.keyboard.press(key)
        now = focused(page)
        if now["name"] == name and (trace is None or now["trace"] == trace):
            return
    pytest.fail(f"{key} never reached {name}")


def test_keyboard_only(demo: DemoChat):
    page = demo.page
    reasons = project_config(demo.stack, demo.stack.public_key)["reasons"]
    demo.open()
    press_until(page, "Tab", "prompt", None)
    page.keyboard.type(PROMPT)
    page.keyboard.press("Enter")
    trace = demo.wait_answer(1)
    demo.shown(trace)

    press_until(page, "Shift+Tab", "down", trace)  # back from the composer to the answer's thumbs
    page.keyboard.press("Enter")
    assert focused(page) == {"name": "reason", "trace": trace}, "focus did not move into the reason panel"
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # the second reason
    assert focused(page)["name"] == "comment"
    stored = demo.stored(trace, lambda t: t["rating"] and t["rating"][0]["reason"])
    assert (stored["rating"][0]["value"], stored["rating"][0]["reason"]) == (0, reasons[1]["code"])

    page.keyboard.type("Keyboard only, and it worked")
    press_until(page, "Tab", "submit", trace, limit=5)
    page.keyboard.press("Enter")
    assert focused(page) == {"name": "down", "trace": trace}, "focus did not return to the thumbs"
    assert demo.part(trace, "down").get_attribute("aria-pressed") == "true"
    stored = demo.stored(trace, lambda t: t["rating"][0]["comment"])
    assert stored["rating"][0]["comment"] == "Keyboard only, and it worked"

    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")  # thumbs up replaces the vote
    assert focused(page)["name"] == "up"
    stored = demo.stored(trace, lambda t: t["rating"][0]["value"] == 1)
    assert [e["value"] for e in stored["events"] if e["type"] == "feedback"] == [0, 0, 0, 1]


def test_thumbs_sit_in_one_row_under_the_answer(chat: Chat):
    trace = chat.answer_with_thumbs(PROMPT)
    up, down = chat.part(trace, "up").bounding_box(), chat.part(trace, "down").bounding_box()
    host = chat.answer(trace).locator("backchannel-feedback").bounding_box()
    column = chat.text(trace).locator("..").bounding_box()  # what holds the answer's text
    assert up["y"] == down["y"] and down["x"] > up["x"], f"thumbs not inline: up {up}, down {down}"
    assert host["x"] >= column["x"], f"the widget {host} sits outside the answer's column {column}"
