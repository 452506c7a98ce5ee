"""Fixtures shared by tests/ and e2e/: one real redis-server and one real Chromium per test session."""

from __future__ import annotations

import pytest

from tests.servers import CHROMIUM_ARGS, RedisServer, chromium_executable


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable(), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def pytest_collection_modifyitems(items):
    # Once started, the sync Playwright browser keeps an event loop running in the main thread for the rest of the
    # session, and no asyncio test can run after it: tests that use the browser go last (in their order).
    items.sort(key=lambda item: "browser" in getattr(item, "fixturenames", ()))
