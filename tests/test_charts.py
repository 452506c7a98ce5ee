"""Charts: well-formed SVG, escaped text, labels that say what is shown, geometry within the axes, readable colours."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import pytest

from gateway.analytics.intervals import wilson
from gateway.analytics.rates import SIGNALS as STATS_SIGNALS
from gateway.pages import charts, dashboard
from gateway.pages.charts import Bar, Coverage, Marker, Point, Series

SVG = "{http://www.w3.org/2000/svg}"
DAY = 86400
START = datetime(2026, 11, 16, tzinfo=timezone.utc).timestamp()
END = START + 15 * DAY  # 16–30 Nov
HOSTILE = '<script>alert("x")</script> & co'


def point(t: float, count: int, shown: int) -> Point:
    low, high = wilson(count, shown)
    return Point(t, shown, count, count / shown, low, high)


def daily(rates: list[float], shown: int = 1000) -> list[Point]:
    return [point(START + i * DAY, round(r * shown), shown) for i, r in enumerate(rates)]


def two_models() -> list[Series]:
    return [Series("model-a", daily([0.09] * 15), hue=0),
            Series("model-b", daily([0.09] * 7 + [0.14] * 8), hue=1, dash=1)]


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    assert root.tag == SVG + "svg" and root.get("role") == "img"
    assert root.find(SVG + "title").text == root.get("aria-label")
    return root


def numbers(d: str) -> list[tuple[float, float]]:
    values = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", d)]
    return list(zip(values[::2], values[1::2]))


def test_rate_chart_says_what_it_shows_and_what_changed():
    svg = charts.rate_chart(two_models(), title="Thumbs-down rate per model", start=START, end=END, step=DAY)
    root = parse(svg)
    assert root.get("aria-label") == ("Thumbs-down rate per model, 16–30 Nov 2026: "
                                      "largest change: model-b rose from 9.0% to 14.0%")
    desc = root.find(SVG + "desc").text
    assert "model-a: 9.0% over the range (1350 of 15000)" in desc
    assert "model-b:" in desc and "highest 14.0%" in desc


def test_rate_chart_counts_its_markers_and_draws_them_on_the_timeline():
    markers = [Marker(START + 7.5 * DAY, "A1", "model-b"), Marker(START + 9 * DAY, "A2")]
    svg = charts.rate_chart(two_models(), title="T", start=START, end=END, step=DAY, markers=markers)
    root = parse(svg)
    assert root.get("aria-label").endswith("; 2 alerts marked")
    rules = root.findall(f".//{SVG}line[@class='alert-rule']")
    assert [r.get("x1") for r in rules] == [r.get("x2") for r in rules]
    xs = [float(r.get("x1")) for r in rules]
    left, right = charts.MARGIN_LEFT, charts.WIDTH - charts.MARGIN_RIGHT
    assert xs[0] == pytest.approx(left + 7.5 / 15 * (right - left), abs=0.1)
    assert [t.text for t in root.findall(f".//{SVG}text[@class='alert-label']")] == ["A1", "A2"]
    assert "A1: model-b at 2026-11-23 12:00" in root.find(SVG + "desc").text


def test_bands_and_lines_stay_within_the_axes():
    # Small samples: wide intervals that reach 0 and far above the rates.
    series = [Series("tiny", [point(START + i * DAY, c, 5) for i, c in enumerate([0, 5, 1, 0, 2])]),
              Series("big", daily([0.5, 0.52, 0.49, 0.51, 0.5]), hue=2)]
    svg = charts.rate_chart(series, title="T", start=START, end=START + 5 * DAY, step=DAY)
    root = parse(svg)
    left, right = charts.MARGIN_LEFT, charts.WIDTH - charts.MARGIN_RIGHT
    top, bottom = charts.MARGIN_TOP, charts.RATE_HEIGHT - charts.MARGIN_BOTTOM
    shapes = root.findall(f".//{SVG}g[@class='bands']/{SVG}path") + root.findall(f".//{SVG}g[@class='lines']/{SVG}path")
    assert len(shapes) == 4
    for shape in shapes:
        for x, y in numbers(shape.get("d")):
            assert left <= x <= right and top <= y <= bottom, (x, y)
    # the axis reaches the highest band: "tiny" has 5/5 once, so its band touches 100%
    ticks = [t.text for t in root.findall(f".//{SVG}g[@class='grid']/{SVG}text")]
    assert ticks[-1] == "100%"


def test_a_missing_bucket_breaks_the_line_and_a_lone_point_is_a_dot():
    points = daily([0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    gapped = points[:2] + points[3:5]  # day 3 and day 6 missing: two runs of two points
    lone = [points[0], points[3]]
    svg = charts.rate_chart([Series("gapped", gapped), Series("lone", lone, hue=1)], title="T", start=START,
                            end=START + 6 * DAY, step=DAY)
    root = parse(svg)
    lines = root.findall(f".//{SVG}g[@class='lines']/{SVG}path")
    assert len(lines) == 1 and lines[0].get("d").count("M") == 2
    assert len(root.findall(f".//{SVG}rect[@class='band c1']")) == 2  # the lone points' intervals


def test_client_text_is_escaped_everywhere():
    series = [Series(HOSTILE, daily([0.1, 0.2]))]
    outputs = [
        charts.rate_chart(series, title=HOSTILE, start=START, end=START + 2 * DAY, step=DAY,
                          markers=[Marker(START, HOSTILE, HOSTILE)]),
        charts.bar_chart([Bar(HOSTILE, 3, HOSTILE)], title=HOSTILE),
        charts.coverage_chart([Coverage(HOSTILE, 10, (0.1, 0.0, 0.4), (0.5, 0.2, 0.8))], title=HOSTILE),
    ]
    for svg in outputs:
        assert "<script>" not in svg
        root = parse(svg)
        assert HOSTILE[:20] in root.get("aria-label")  # escaped in the markup, whole again when parsed
        assert any(HOSTILE[:15] in (t.text or "") for t in root.iter(SVG + "text"))
    table = charts.rate_table(series, caption=HOSTILE, bucket_label="day")
    assert "<script>" not in table and "&lt;script&gt;" in table
    assert ET.fromstring(table).find("caption").text == HOSTILE


def test_long_labels_are_shortened_on_the_chart_and_whole_in_the_table():
    name = "a-model-with-a-very-long-name · summarize-the-document"
    series = [Series(name, daily([0.1, 0.1]))]
    root = parse(charts.rate_chart(series, title="T", start=START, end=START + 2 * DAY, step=DAY))
    label = root.find(f".//{SVG}text[@class='label c0']").text
    assert label.startswith(name[:21] + "…") and len(label.split(" ")[0]) <= charts.LABEL_CHARS
    assert name in charts.rate_table(series, caption="c", bucket_label="day")


@pytest.mark.parametrize("make", [
    lambda: charts.rate_chart([], title="Thumbs-down rate", start=START, end=END, step=DAY),
    lambda: charts.rate_chart([Series("nothing", [])], title="Thumbs-down rate", start=START, end=END, step=DAY),
    lambda: charts.coverage_chart([], title="Coverage"),
    lambda: charts.bar_chart([], title="Reasons", empty="No reasons in this range"),
])
def test_empty_data_makes_a_chart_that_says_so(make):
    root = parse(make())
    label = root.get("aria-label")
    assert "no impressions in this range" in label or "no reasons in this range" in label
    assert root.find(f".//{SVG}text[@class='empty']") is not None


def test_a_steady_chart_says_nothing_changed():
    series = [Series("model-a", daily([0.1] * 15))]
    label = parse(charts.rate_chart(series, title="T", start=START, end=END, step=DAY)).get("aria-label")
    assert label.endswith("no series changed: model-a steady at 10.0%")


def test_bar_chart_lists_its_bars_longest_first():
    bars = [Bar("too_long", 12, "12 · 40.0%"), Bar("wrong", 6, "6 · 20.0%")]
    root = parse(charts.bar_chart(bars, title="Thumbs-down reasons, 16–30 Nov 2026"))
    assert root.get("aria-label") == "Thumbs-down reasons, 16–30 Nov 2026: too_long 12 · 40.0%; wrong 6 · 20.0%"
    widths = [float(r.get("width")) for r in root.iter(SVG + "rect")]
    assert widths[0] == pytest.approx(2 * widths[1])


def test_coverage_chart_names_both_shares_and_the_gap():
    rows = [Coverage("All impressions", 1000, (0.02, 0.013, 0.031), (0.4, 0.37, 0.43)),
            Coverage("model-a", 500, (0.01, 0.004, 0.023), (0.3, 0.26, 0.34)),
            Coverage("model-b", 500, (0.03, 0.018, 0.049), (0.5, 0.456, 0.544), implicit_at_least=True)]
    root = parse(charts.coverage_chart(rows, title="Explicit vs implicit coverage"))
    assert root.get("aria-label") == ("Explicit vs implicit coverage: All impressions: explicit 2.0% of impressions "
                                      "have a vote, implicit 40.0% have an implicit signal; gap from 29.0% (model-a) "
                                      "to 47.0% (model-b)")
    assert "implicit at least 50.0%" in root.find(SVG + "desc").text
    whiskers = root.findall(f".//{SVG}path[@class='whisker']")
    assert len(whiskers) == 6
    for whisker in whiskers:
        for x in re.findall(r"[MH](-?[\d.]+)", whisker.get("d")):
            assert 190 <= float(x) <= charts.WIDTH - 150  # within the 0–100% scale


@pytest.mark.parametrize("high, expected", [(0.0, (0.001, 0.0005)), (0.0031, (0.004, 0.001)),
                                            (0.142, (0.15, 0.05)), (0.2, (0.2, 0.05)), (0.61, (0.8, 0.2)),
                                            (1.0, (1.0, 0.2))])
def test_nice_scale(high, expected):
    top, step = charts.nice_scale(high)
    assert (top, step) == pytest.approx(expected)
    assert top >= min(high, 1.0) and 2 <= round(top / step) <= 5 or top == 0.001


def test_spread_keeps_order_gap_and_bounds():
    placed = charts.spread([100, 101, 102, 250, 251], 20, 252, 13)
    assert placed == sorted(placed)
    assert all(b - a >= 13 - 1e-9 for a, b in zip(placed, placed[1:]))
    assert placed[0] >= 20 and placed[-1] <= 252


@pytest.mark.parametrize("start, end, text", [
    ("2026-11-16", "2026-12-01", "16–30 Nov 2026"),
    ("2026-10-20", "2026-11-03", "20 Oct – 2 Nov 2026"),
    ("2026-12-20", "2027-01-03", "20 Dec 2026 – 2 Jan 2027"),
    ("2026-11-30", "2026-12-01", "30 Nov 2026"),
    ("2026-11-29T13:00", "2026-11-30T13:00", "29 Nov 13:00 – 30 Nov 2026 13:00 UTC"),
])
def test_period(start, end, text):
    def ts(s: str) -> float:
        return datetime.fromisoformat(s).replace(tzinfo=timezone.utc).timestamp()
    assert charts.period(ts(start), ts(end)) == text


def test_pct():
    assert [charts.pct(r) for r in (0, 0.0045, 0.09, 0.1234, 1)] == ["0.00%", "0.45%", "9.0%", "12.3%", "100.0%"]


# --- colours --------------------------------------------------------------------------------------------------------

CSS = (Path(dashboard.__file__).parent / "static" / "pages.css").read_text()


def _colours(name: str) -> tuple[str, str]:
    match = re.search(rf"--{name}: light-dark\((#[0-9a-f]{{6}}), (#[0-9a-f]{{6}})\)", CSS)
    assert match, name
    return match.group(1), match.group(2)


def _contrast(a: str, b: str) -> float:
    def luminance(colour: str) -> float:
        channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * r + 0.7152 * g + 0.0722 * b
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.parametrize("name", [f"c{i}" for i in range(charts.HUES)] + ["text", "muted", "alert", "error", "accent"])
def test_chart_colours_are_readable_text_in_both_themes(name):
    # Direct labels are drawn in the series' colour: they need text contrast (4.5:1) on the page and on panels.
    for theme in (0, 1):
        colour = _colours(name)[theme]
        for background in ("bg", "panel"):
            assert _contrast(colour, _colours(background)[theme]) >= 4.5, (name, theme, background)


def test_every_hue_class_the_charts_emit_has_a_colour():
    for i in range(charts.HUES):
        assert f".chart .c{i} {{ stroke: var(--c{i}); fill: var(--c{i}); }}" in CSS
    for i in range(1, charts.DASHES):
        assert f".chart .d{i} {{ stroke-dasharray:" in CSS


def test_the_dashboard_names_every_signal_the_stats_answer():
    assert set(dashboard.SIGNALS) == set(STATS_SIGNALS)
