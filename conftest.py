"""Fixtures shared by tests/ and e2e/: one real redis-server per test session, and pytest-playwright's browser
(its `browser`, `context` and `page` fixtures and its command-line options) launched on the Chromium this machine has.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserType

from tests.servers import CHROMIUM_ARGS, RedisServer, chromium_executable


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer()
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


def headed_without_display(config: pytest.Config) -> bool:
    """`--headed` asked for where no window can open (CI, or no X/Wayland display): the browser stays headless."""
    no_display = not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return bool(config.getoption("--headed", False)) and (no_display or bool(os.environ.get("CI")))


def pytest_report_header(config: pytest.Config) -> str | None:
    if headed_without_display(config):
        return "--headed: no display here (or CI is set), so the browser runs headless"
    return None


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any], browser_type: BrowserType,
                             pytestconfig: pytest.Config) -> dict[str, Any]:
    """The plugin's launch options (--headed, --slowmo, --browser-channel), on Debian's Chromium and its flags
    where Playwright has no browser of its own installed (it cannot download one here)."""
    args = dict(browser_type_launch_args)
    if headed_without_display(pytestconfig):
        args["headless"] = True
    if browser_type.name == "chromium" and "channel" not in args:
        args["args"] = [*CHROMIUM_ARGS, *args.get("args", [])]
        if not Path(browser_type.executable_path).exists():
            args.setdefault("executable_path", chromium_executable())
    return args


def pytest_collection_modifyitems(items):
    # Once started, the sync Playwright browser keeps an event loop running in the main thread for the rest of the
    # session, and no asyncio test can run after it: tests that use the browser go last (in their order).
    items.sort(key=lambda item: "browser" in getattr(item, "fixturenames", ()))
