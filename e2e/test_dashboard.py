"""The dashboard on `backchannel demo`'s seeded history (two weeks; `model-b` regresses part-way): sign in with the
secret key from the keyboard, see every chart and the open alert, 0 axe violations, no request leaves the gateway's
origin, and screenshots in both colour schemes (test-artifacts/dashboard-demo-<scheme>.png)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect

from e2e.stack import Stack


def wait_open_alert(stack: Stack, timeout: float = 60) -> list[dict]:
    """The demo's open alerts, once the gateway's pass at start has found the regression."""
    deadline = time.monotonic() + timeout
    with stack.api() as api:
        while True:
            alerts = api.get("/v1/alerts", params={"state": "open"}).json()["alerts"]
            if any(a["key"].get("model") == "model-b" for a in alerts):
                return alerts
            assert time.monotonic() < deadline, f"no open model-b alert after {timeout} s: {alerts}"
            time.sleep(0.2)


def assert_no_axe_violations(page, what: str) -> None:
    results = Axe().run(page)
    assert results.violations_count == 0, f"axe-core found violations {what}:\n{results.generate_report()}"


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_dashboard_shows_the_seeded_regression(new_context, stack: Stack, artifacts: Path, scheme: str):
    alerts = wait_open_alert(stack)
    context = new_context(color_scheme=scheme, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    elsewhere: list[str] = []

    def offline(route):  # every asset comes from the gateway: anything else is recorded and refused
        if route.request.url.startswith(stack.gateway_url + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", offline)
    page.goto(stack.gateway_url + "/dashboard")
    key = page.get_by_label("Secret key")
    expect(key).to_be_focused()
    assert key.get_attribute("type") == "password"
    page.keyboard.type(stack.secret_key)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Alerts")).to_be_visible()
    assert context.cookies()[0]["httpOnly"] is True

    charts = page.locator('svg[role="img"]')
    assert charts.count() == 12  # a rate chart per signal (10), coverage, reasons
    labels = [charts.nth(i).get_attribute("aria-label") for i in range(charts.count())]
    down = next(label for label in labels if label.startswith("Thumbs-down rate"))
    assert re.search(r"model-b · \w+ rose from", down), down
    regenerated = next(label for label in labels if label.startswith("Regenerated rate"))
    assert re.search(r"model-b · \w+ rose from", regenerated) and "alert" in regenerated, regenerated
    assert page.locator("svg .alert-rule").count() >= 1  # alerts marked on the timeline
    rows = page.locator("table.alerts tbody tr.state-open")
    assert rows.count() == len(alerts)
    expect(page.locator("table.alerts").get_by_text("model-b · answer").first).to_be_visible()
    tiles = dict(zip(page.locator("dl dt").all_inner_texts(), page.locator("dl dd").all_inner_texts()))
    assert tiles["Open alerts"] == str(len(alerts))
    assert tiles["Flagged sessions"].startswith("3")  # the demo's three outlier sessions
    assert_no_axe_violations(page, f"on the dashboard ({scheme})")

    page.screenshot(path=artifacts / f"dashboard-demo-{scheme}.png", full_page=True, animations="disabled")
    assert (artifacts / f"dashboard-demo-{scheme}.png").stat().st_size > 0
    assert elsewhere == []
    context.close()
