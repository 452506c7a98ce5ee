"""What a failed browser test leaves behind, beside the screenshot and trace pytest-playwright keeps in the same
folder (test-artifacts/<test id>/): each open page's HTML, the browser console, and the servers' logs for that test.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Error, Request, Response


class BrowserLog:
    """Everything the pages of one browser context said: console messages, uncaught errors, failed requests and
    error responses, each line prefixed with the time since the context was opened."""

    def __init__(self, context: BrowserContext) -> None:
        self.opened = time.monotonic()
        self.lines: list[str] = []
        self.errors: list[str] = []  # console errors and uncaught exceptions
        self.problems: list[str] = []  # failed requests and error responses (a missing favicon aside)
        context.on("console", self._console)
        context.on("weberror", lambda error: self._error(f"uncaught {error.error}"))
        context.on("requestfailed", self._failed)
        context.on("response", self._response)

    def _console(self, message: ConsoleMessage) -> None:
        location = message.location
        self._line(f"{message.type}: {message.text}  ({location.get('url')}:{location.get('lineNumber')})")
        if message.type == "error":
            self.errors.append(message.text)

    def _error(self, text: str) -> None:
        self._line(f"error: {text}")
        self.errors.append(text)

    def _failed(self, request: Request) -> None:
        problem = f"failed {request.method} {request.url}: {request.failure}"
        self._line(f"network: {problem}")
        self.problems.append(problem)

    def _response(self, response: Response) -> None:
        if response.status >= 400 and not response.url.endswith("/favicon.ico"):
            problem = f"{response.status} {response.request.method} {response.url}"
            self._line(f"network: {problem}")
            self.problems.append(problem)

    def _line(self, text: str) -> None:
        self.lines.append(f"{time.monotonic() - self.opened:8.3f}s {text}")

    def rule_broken(self) -> list[str]:
        """The console-error rule: a test ends without console errors, uncaught exceptions, failed requests or error
        responses. Chromium's own "Failed to load resource" line repeats a problem already listed."""
        return [e for e in self.errors if not e.startswith("Failed to load resource")] + self.problems


def failed(node: pytest.Item) -> bool:
    """Whether the test failed so far (pytest-playwright records each phase's report on the item)."""
    report = getattr(node, "rep_call", None) or getattr(node, "rep_setup", None)
    return report is None or report.failed


def save(folder: Path, context: BrowserContext, log: BrowserLog, server_logs: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, page in enumerate(context.pages, start=1):
        name = "page.html" if len(context.pages) == 1 else f"page-{index}.html"
        try:
            (folder / name).write_text(page.content())
        except Error as exc:  # a page mid-navigation or crashed: say so rather than lose the rest
            (folder / name).write_text(f"<!-- could not read the page: {exc} -->")
    (folder / "console.log").write_text("".join(line + "\n" for line in log.lines))
    for server, text in server_logs.items():
        (folder / f"{server}.log").write_text(text)
