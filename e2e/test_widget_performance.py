"""The issue's performance requirement, in a real Chromium against the real gateway: on a page with 200 assistant
messages (added in one go, and appended one by one) the widget makes no long task (> 50 ms), judged against a control
page without the widget under the same load. The scripting time it adds per message is printed, and only bounded
generously here (5 ms) so a pathological regression fails; `bench/widget_perf.py` measures it for docs/benchmarks.md.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from bench.widget_perf import MODES, SETTINGS, measure
from tests.widget_harness import WidgetSite

MESSAGES = 200
ATTEMPTS = 2  # a busy machine can stall any task; a long task that is really the widget's shows up in every attempt
MAX_SCRIPT_MS_PER_MESSAGE = 5.0


@pytest.fixture(scope="module")
def site():
    with tempfile.TemporaryDirectory(prefix="bc-e2e-perf-") as workdir:
        server = WidgetSite(Path(workdir) / "bc.db", **SETTINGS).start()
        yield server
        server.stop()


@pytest.mark.parametrize("mode", MODES)
def test_no_long_task_from_the_widget_with_200_messages(browser, site, mode):
    attempts = []
    for attempt in range(ATTEMPTS):
        result = measure(browser, site, mode, messages=MESSAGES, run=f"test{attempt}")
        attempts.append(result)
        print(f"{mode}: widget adds {result['script_ms_per_message']:.3f} ms of script per message "
              f"(its callbacks {result['widget_callback_ms_per_message']:.3f} ms), longest widget callback "
              f"{result['widget_callback_max_ms']:.1f} ms; long tasks: widget page {result['long_tasks_widget_page']}, "
              f"control {result['long_tasks_control_page']}, the widget's {result['long_tasks_blamed_on_widget']}")
        if not result["long_tasks_blamed_on_widget"]:
            break
    assert not result["long_tasks_blamed_on_widget"], f"the widget made long tasks in every attempt: {attempts}"
    assert min(a["script_ms_per_message"] for a in attempts) < MAX_SCRIPT_MS_PER_MESSAGE, attempts
