"""End-to-end fixtures, layered on pytest-playwright's (`browser`, `context`, `page`, `new_context` and its options:
--headed, --slowmo, --browser-channel, --tracing, --video, --screenshot, --base-url, --output).

    stack        the running `backchannel demo` (gateway + Quill, real uvicorn, real Redis), session-wide
    context      the plugin's context, with the timing probe installed and the browser's console recorded
    page         the plugin's page, failing the test on console errors (unless marked `console_errors`) and saving
                 evidence when the test fails (e2e/evidence.py)
    stored       stored(trace_id, predicate): poll GET /v1/traces/{id} until predicate(trace) holds, flushing the
                 page's widget meanwhile
    demo, bare   page objects for Quill and for the bare static chat; `chat` runs a test against both (e2e/chats.py)
    artifacts    test-artifacts/ (the plugin's --output), for files a passing test keeps, like screenshots
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from playwright.sync_api import BrowserContext, Page

from e2e import evidence
from e2e.chats import TIMING_PROBE, BareChat, Chat, DemoChat, stored as stored_trace
from e2e.stack import Stack, StaticSite, running_stack


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "console_errors: the test expects the browser to log errors (failed requests)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def stack(redis_server) -> Iterator[Stack]:
    with running_stack(redis_server.url) as stack:
        yield stack


@pytest.fixture
def context(context: BrowserContext) -> BrowserContext:
    context.add_init_script(TIMING_PROBE)
    context.browser_log = evidence.BrowserLog(context)  # type: ignore[attr-defined]
    return context


@pytest.fixture
def page(page: Page, context: BrowserContext, request: pytest.FixtureRequest, output_path: str) -> Iterator[Page]:
    """The plugin's page. Unless the test is marked `console_errors`, it must end without console errors, uncaught
    exceptions, failed requests or error responses. When it fails, its folder in test-artifacts/ gets the pages'
    HTML, the console and the servers' logs for this test (the plugin adds the screenshot and the trace)."""
    stack: Stack | None = request.getfixturevalue("stack") if "stack" in request.fixturenames else None
    log_start = stack.log_size() if stack else 0
    yield page
    log: evidence.BrowserLog = context.browser_log  # type: ignore[attr-defined]
    broken = [] if request.node.get_closest_marker("console_errors") else log.rule_broken()
    if broken or evidence.failed(request.node):
        evidence.save(Path(output_path), context, log, stack.logs_since(log_start) if stack else {})
    assert not broken, f"the browser logged errors: {broken}"


@pytest.fixture
def stored(stack: Stack, page: Page) -> Callable[..., dict[str, Any]]:
    """stored(trace_id, predicate, secret_key=None, timeout=15): the trace once GET /v1/traces/{id} satisfies
    predicate, flushing the page's queue while it polls (the widget would otherwise send every 2 s)."""
    def wait(trace_id: str, predicate: Callable[[dict[str, Any]], bool], **kw: Any) -> dict[str, Any]:
        return stored_trace(stack, page, trace_id, predicate, **kw)
    return wait


@pytest.fixture(scope="session")
def artifacts(pytestconfig: pytest.Config) -> Path:
    folder = Path(pytestconfig.getoption("--output"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def static_site() -> Iterator[StaticSite]:
    with StaticSite() as site:
        yield site


@pytest.fixture(scope="session")
def bare_project(stack: Stack, static_site: StaticSite) -> dict[str, str]:
    return stack.create_project(static_site.origin)


@pytest.fixture(params=["demo", "bare"])
def chat(request: pytest.FixtureRequest, stack: Stack, page: Page) -> Chat:
    """The same checks against both apps."""
    if request.param == "demo":
        return DemoChat(stack, page)
    return BareChat(stack, page, request.getfixturevalue("static_site"), request.getfixturevalue("bare_project"))


@pytest.fixture
def demo(stack: Stack, page: Page) -> DemoChat:
    return DemoChat(stack, page)


@pytest.fixture
def bare(stack: Stack, page: Page, static_site: StaticSite, bare_project: dict[str, str]) -> BareChat:
    return BareChat(stack, page, static_site, bare_project)
