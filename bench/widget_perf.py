"""What the widget costs the host page, measured in a real Chromium against the real gateway.

A chat page gets 200 assistant messages (each a trace logged with `POST /v1/traces`, with its real token and a user
prompt before it), either added in one go or appended one by one (one task each). The same page is loaded with the
widget and without it (the control), so host work is never blamed on the widget. On each page:

- a `longtask` PerformanceObserver, registered before anything else, lists the tasks over 50 ms;
- on the widget page, `MutationObserver`, `setTimeout` and `queueMicrotask` are wrapped before the widget loads (the
  host page keeps the originals), so every observer, timer and microtask callback the widget runs is timed with
  `performance.now()`;
- a long task on the widget page is the widget's when, without the time of the widget's callbacks in it, it would not
  have been long (the host's work in the same task is the control page's work too);
- CDP `Performance.getMetrics` gives the renderer's script, style and layout time from the first message to the
  last "shown" event accepted (stored) by the gateway; the widget page minus the control, divided by 200, is what the widget adds per message
  (drawing the thumbs and queueing and sending the "shown" events included).

    .venv/bin/python bench/widget_perf.py [--messages 200] [--repeat 5] [--json out.json]

`e2e/test_widget_performance.py` runs the same measurement once and asserts the issue's hard limit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import CHROMIUM_ARGS, chromium_executable, wait_for  # noqa: E402
from tests.widget_harness import WidgetSite  # noqa: E402

LONG_TASK_MS = 50
MODES = ("bulk", "one-by-one")
# Every "shown" event of a run is delivered within seconds: the default limits would (rightly) refuse some.
SETTINGS = {"limit_session": "100000/s burst 100000", "limit_ip": "100000/s burst 100000"}
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec "
         "romeo sierra tango uniform victor whiskey xray yankee zulu amber basalt cedar dune ember fjord granite "
         "harbor iris jade kelp lagoon meadow nectar opal pine quartz reef slate thistle umber vale willow").split()

# Runs first in <head>: long tasks, then (widget page only) timed wrappers around what the widget schedules with.
INSTRUMENT = """
window.__host = {setTimeout: window.setTimeout.bind(window), queueMicrotask: window.queueMicrotask.bind(window),
                 MutationObserver: window.MutationObserver};
window.__long = []; window.__cb = []; window.__spans = [];
new PerformanceObserver(list => list.getEntries().forEach(e => __long.push([e.startTime, e.duration])))
  .observe({type: 'longtask', buffered: true});
if (WIDGET) {
  const timed = (kind, f) => function () {
    const t = performance.now();
    try { return f.apply(this, arguments) } finally { __cb.push([t, performance.now() - t, kind]) }
  };
  window.MutationObserver = class extends __host.MutationObserver { constructor(cb) { super(timed('observer', cb)) } };
  window.setTimeout = (f, ms, ...args) => __host.setTimeout(timed('timer', () => f(...args)), ms);
  window.queueMicrotask = f => __host.queueMicrotask(timed('microtask', f));
}
"""

# The host page's own work: each call is one task, its span recorded.
HOST = """
const chat = document.getElementById('chat');
const words = %s;
const turn = (m, i) => `<div data-feedback-role="user">${words.slice(i * 6 %% words.length).concat(words).slice(0, 6).join(' ')}</div>`
  + `<article data-trace-id="${m[0]}" data-feedback-token="${m[1]}" data-streaming="false">`
  + `<p>Answer ${i}: ${'The quick brown fox jumps over the lazy dog. '.repeat(8)}</p></article>`;
function hostTask(f) { const t = performance.now(); f(); __spans.push([t, performance.now() - t]) }
window.addAll = msgs => hostTask(() => chat.insertAdjacentHTML('beforeend', msgs.map(turn).join('')));
window.appendEach = (msgs, gapMs) => new Promise(done => {
  let i = 0;
  (function next() {
    if (i == msgs.length) return done();
    hostTask(() => chat.insertAdjacentHTML('beforeend', turn(msgs[i], i++)));
    __host.setTimeout(next, gapMs);
  })();
});
""" % json.dumps(WORDS)


def page_html(site: WidgetSite, pk: str, *, widget: bool) -> str:
    tag = f'<script src="{site.widget_src}" data-project="{pk}" data-delay-ms="100"></script>' if widget else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="referrer" content="unsafe-url">'
            f"<title>Chat</title><script>const WIDGET = {str(widget).lower()};{INSTRUMENT}</script></head>"
            f'<body><main id="chat"></main><script>{HOST}</script>{tag}</body></html>')


def _metrics(cdp: Any) -> dict[str, float]:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def run_once(browser: Any, site: WidgetSite, *, mode: str, widget: bool, messages: int = 200, run: str = "") -> dict:
    """Load a page (with or without the widget), add `messages` messages, wait for every "shown" event to be stored."""
    pk, secret = site.create_project()
    session = f"perf-{run}-{mode}-{widget}"
    msgs = [(f"t{i}", site.log_trace(secret, f"t{i}", session)) for i in range(messages)]
    name = f"perf-{run}-{mode}-{'widget' if widget else 'control'}"
    site.pages[name] = page_html(site, pk, widget=widget)
    context = browser.new_context()
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(site.url(name))
        if widget:  # the widget has its config: it is ready to draw
            page.wait_for_function("() => performance.getEntriesByType('resource').some(r => r.name.includes('/config'))"
                                   " && window.backchannel")
        cdp = context.new_cdp_session(page)
        cdp.send("Performance.enable")
        before = _metrics(cdp)
        started = time.perf_counter()
        if mode == "bulk":
            page.evaluate("msgs => addAll(msgs)", msgs)
        else:
            page.evaluate("msgs => appendEach(msgs, 5)", msgs)
        if widget:
            wait_for(lambda: len(_accepted_shown(site, pk)) == messages, timeout=60, interval=0.1,
                     what=f"{messages} 'shown' events accepted")
        else:
            time.sleep(0.5)  # the widget page's delay and more: nothing is scheduled on the control page anyway
        wall = time.perf_counter() - started
        after = _metrics(cdp)
        probe = page.evaluate("() => ({long: __long, cb: __cb, spans: __spans,"
                              " hosts: document.querySelectorAll('backchannel-feedback').length})")
        assert not errors, errors
    finally:
        context.close()
    delta = {k: (after[k] - before[k]) * 1000 for k in ("ScriptDuration", "RecalcStyleDuration", "LayoutDuration",
                                                         "TaskDuration")}
    return {"mode": mode, "widget": widget, "messages": messages, "wall_s": wall, **{k + "_ms": v for k, v in delta.items()},
            "long_tasks": probe["long"], "callbacks": probe["cb"], "host_spans": probe["spans"],
            "widget_hosts": probe["hosts"]}


def _accepted_shown(site: WidgetSite, pk: str) -> set[str]:
    """Traces whose "shown" event the gateway accepted (stored), from the recorded answers."""
    traces = set()
    for r in list(site.requests):
        if r["query"].get("project") == pk and r["status"] == 200 and r["answer"]:
            results = json.loads(r["answer"])["results"]
            for event, result in zip(json.loads(r["body"])["events"], results):
                if event["type"] == "shown" and result["status"] == "accepted":
                    traces.add(event["trace_id"])
    return traces


def widget_long_tasks(widget: dict) -> list[dict]:
    """Long tasks on the widget page that are the widget's: its own callbacks in it took over 50 ms, or without them
    the task would not have been long. (Host work in a task is not blamed: the control page does it too.)"""
    blamed = []
    for start, duration in widget["long_tasks"]:
        mine = [(d, kind) for t, d, kind in widget["callbacks"] if start <= t <= start + duration]
        inside = sum(d for d, _ in mine)
        if inside > LONG_TASK_MS or inside and duration - inside <= LONG_TASK_MS:
            blamed.append({"start": round(start), "duration": round(duration), "widget_ms": round(inside, 1),
                           "callbacks": sorted({kind for _, kind in mine})})
    return blamed


def summarize(widget: dict, control: dict) -> dict:
    n = widget["messages"]
    callbacks = [d for _, d, _ in widget["callbacks"]]
    return {
        "mode": widget["mode"],
        "messages": n,
        "script_ms_per_message": (widget["ScriptDuration_ms"] - control["ScriptDuration_ms"]) / n,
        "style_layout_ms_per_message": (widget["RecalcStyleDuration_ms"] + widget["LayoutDuration_ms"]
                                        - control["RecalcStyleDuration_ms"] - control["LayoutDuration_ms"]) / n,
        "widget_callbacks": len(callbacks),
        "widget_callback_max_ms": max(callbacks, default=0.0),
        "widget_callback_ms_per_message": sum(callbacks) / n,
        "long_tasks_widget_page": [round(d, 1) for _, d in widget["long_tasks"]],
        "long_tasks_control_page": [round(d, 1) for _, d in control["long_tasks"]],
        "long_tasks_blamed_on_widget": widget_long_tasks(widget),
        "host_span_max_ms": max((d for _, d in widget["host_spans"]), default=0.0),
    }


def measure(browser: Any, site: WidgetSite, mode: str, *, messages: int = 200, run: str = "0") -> dict:
    control = run_once(browser, site, mode=mode, widget=False, messages=messages, run=run)
    widget = run_once(browser, site, mode=mode, widget=True, messages=messages, run=run)
    assert widget["widget_hosts"] == messages, widget["widget_hosts"]
    return summarize(widget, control)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    load = os.getloadavg()[0]
    return f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, load average {load:.1f} at start"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    results: dict[str, list[dict]] = {mode: [] for mode in MODES}
    about = machine()
    with tempfile.TemporaryDirectory(prefix="bc-widget-perf-") as tmp, sync_playwright() as p:
        site = WidgetSite(Path(tmp) / "bc.db", **SETTINGS).start()
        browser = p.chromium.launch(executable_path=chromium_executable(), headless=True, args=CHROMIUM_ARGS)
        try:
            version = browser.version
            for i in range(args.repeat):
                for mode in MODES:
                    results[mode].append(measure(browser, site, mode, messages=args.messages, run=str(i)))
        finally:
            browser.close()
            site.stop()

    print(f"machine: {about}; Chromium {version}; {args.messages} messages, {args.repeat} runs, median (min-max)")
    summary = {}
    for mode, runs in results.items():
        row = {}
        for key in ("script_ms_per_message", "widget_callback_ms_per_message", "style_layout_ms_per_message",
                    "widget_callback_max_ms"):
            values = [r[key] for r in runs]
            row[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
        row["long_tasks_blamed_on_widget"] = sum(len(r["long_tasks_blamed_on_widget"]) for r in runs)
        row["long_tasks_widget_page"] = [d for r in runs for d in r["long_tasks_widget_page"]]
        row["long_tasks_control_page"] = [d for r in runs for d in r["long_tasks_control_page"]]
        summary[mode] = row
        print(f"{mode:>10}: script +{_fmt(row['script_ms_per_message'])} ms/message (widget callbacks "
              f"{_fmt(row['widget_callback_ms_per_message'])}), style+layout "
              f"+{_fmt(row['style_layout_ms_per_message'])} ms/message, longest widget callback "
              f"{_fmt(row['widget_callback_max_ms'])} ms, long tasks blamed on the widget: "
              f"{row['long_tasks_blamed_on_widget']} (widget page {row['long_tasks_widget_page']}, control "
              f"{row['long_tasks_control_page']})")
    if args.json:
        args.json.write_text(json.dumps({"machine": about, "chromium": version, "summary": summary, "runs": results},
                                        indent=1))
    return 1 if any(row["long_tasks_blamed_on_widget"] for row in summary.values()) else 0


def _fmt(stat: dict) -> str:
    return f"{stat['median']:.3f} ({stat['min']:.3f}-{stat['max']:.3f})"


if __name__ == "__main__":
    sys.exit(main())
