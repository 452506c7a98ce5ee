"""Charts as SVG text: plain values in, a string out, no I/O.

Every chart is an `<svg role="img">` whose `aria-label` says what it shows and what stands out, with a `<title>` (the
same sentence, as a tooltip) and a `<desc>` carrying the numbers; `rate_table` gives the full numbers as an HTML table.
Colours come from the page's CSS (classes `c0`…`c5` for hue, `d0`…`d3` for dash pattern), so light and dark themes are
CSS custom properties and the SVG carries no colour and no `style` attribute (the pages' CSP forbids inline style).
Every piece of text is escaped: series labels are group keys, and group keys come from clients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape

HUES = 6  # the CSS defines c0..c5: Okabe-Ito hues, darker in the light theme and lighter in the dark one
DASHES = 4  # d0..d3: solid, dashed, dotted, dash-dot

WIDTH = 960
RATE_HEIGHT = 280
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 52, 220, 22, 30
LABEL_GAP = 13  # least vertical distance between two direct labels
LABEL_CHARS = 22  # direct labels longer than this are shortened (the table has them whole)
DOTS_UP_TO = 48  # draw a dot on every point when a series has at most this many


@dataclass(frozen=True)
class Point:
    """One bucket of one series: `t` is the bucket's start (unix seconds); `low`/`high` its 95% interval."""

    t: float
    shown: int
    count: int
    rate: float
    low: float
    high: float


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[Point]
    hue: int = 0
    dash: int = 0


@dataclass(frozen=True)
class Marker:
    """A moment on the timeline, e.g. an alert: drawn as a labelled vertical rule."""

    t: float
    label: str
    about: str = ""  # which series it concerns, for the description ("" = all)


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    text: str  # the value as the reader should read it, e.g. "12 (40%)"
    hue: int = 0


@dataclass(frozen=True)
class Coverage:
    """Explicit and implicit coverage of one group, each a rate with its 95% interval."""

    label: str
    shown: int
    explicit: tuple[float, float, float]  # rate, low, high
    implicit: tuple[float, float, float]
    implicit_at_least: bool = False  # the implicit rate is a lower bound (see dashboard.coverage)


@dataclass
class _Svg:
    width: int
    height: int
    label: str
    desc: str
    classes: str
    parts: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.parts.append(text)

    def text(self) -> str:
        label = escape(self.label)
        return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {self.classes}" '
                f'viewBox="0 0 {self.width} {self.height}" role="img" aria-label="{label}">'
                f"<title>{label}</title><desc>{escape(self.desc)}</desc>{''.join(self.parts)}</svg>")


def pct(rate: float) -> str:
    """A rate as the charts print it: two decimals under 1%, one from there on."""
    value = rate * 100
    return f"{value:.2f}%" if abs(value) < 1 else f"{value:.1f}%"


def period(start: float, end: float) -> str:
    """`start`…`end` (unix seconds, end exclusive) as a reader says it: "16–30 Nov 2026", "30 Nov 2026, 00:00–12:00
    UTC"."""
    a, b = _utc(start), _utc(end)
    if end - start < 2 * 86400 and (a.hour or b.hour or a.minute or b.minute):
        if a.date() == b.date():
            return f"{a.day} {a:%b %Y}, {a:%H:%M}–{b:%H:%M} UTC"
        return f"{a.day} {a:%b} {a:%H:%M} – {b.day} {b:%b %Y} {b:%H:%M} UTC"
    b = _utc(end - 1)  # the last day the range includes
    if a.year != b.year:
        return f"{a.day} {a:%b %Y} – {b.day} {b:%b %Y}"
    if a.month != b.month:
        return f"{a.day} {a:%b} – {b.day} {b:%b %Y}"
    return f"{a.day}–{b.day} {b:%b %Y}" if a.day != b.day else f"{a.day} {a:%b %Y}"


def rate_chart(series: Sequence[Series], *, title: str, start: float, end: float, step: float,
               markers: Sequence[Marker] = (), width: int = WIDTH, height: int = RATE_HEIGHT) -> str:
    """A rate over time per series, each with its interval band, markers as vertical rules, labels at the lines' ends.

    `start`/`end` bound the time axis (unix seconds, end exclusive); `step` is the bucket length. Points are drawn at
    their bucket's middle; a missing bucket breaks the line instead of bridging it.
    """
    drawn = [s for s in series if s.points]
    label = f"{title}, {period(start, end)}: {describe_change(drawn, start, end)}"
    if markers:
        label += f"; {len(markers)} alert{'s' if len(markers) != 1 else ''} marked"
    # With many lines the bands overlap: the CSS draws them fainter ("crowded").
    classes = "rate-chart crowded" if len(drawn) > 3 else "rate-chart"
    svg = _Svg(width, height, label, _rate_desc(drawn, markers), classes)
    left, right, top, bottom = MARGIN_LEFT, width - MARGIN_RIGHT, MARGIN_TOP, height - MARGIN_BOTTOM
    if not drawn:
        svg.add(f'<text class="empty" x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle">'
                f"No impressions in this range</text>")
        return svg.text()

    y_max, y_step = nice_scale(max(p.high for s in drawn for p in s.points))
    span = max(end - start, step)

    def x(t: float) -> float:
        return left + (min(max(t + step / 2, start), end) - start) / span * (right - left)

    def y(rate: float) -> float:
        return bottom - min(max(rate, 0.0), y_max) / y_max * (bottom - top)

    svg.add('<g class="grid">')
    for i in range(round(y_max / y_step) + 1):
        rate = i * y_step
        svg.add(f'<line x1="{left}" x2="{right}" y1="{y(rate):.1f}" y2="{y(rate):.1f}"/>')
        svg.add(f'<text class="tick" x="{left - 6}" y="{y(rate) + 4:.1f}" text-anchor="end">'
                f"{_tick_pct(rate, y_step)}</text>")
    svg.add("</g>")
    svg.add(_time_axis(start, end, left, right, bottom))

    svg.add('<g class="bands">')
    for s in drawn:
        for run in _runs(s.points, step):
            if len(run) == 1:
                p = run[0]
                svg.add(f'<rect class="band c{s.hue % HUES}" x="{x(p.t) - 3:.1f}" y="{y(p.high):.1f}" width="6" '
                        f'height="{max(y(p.low) - y(p.high), 0.5):.1f}"/>')
                continue
            upper = " ".join(f"{x(p.t):.1f},{y(p.high):.1f}" for p in run)
            lower = " ".join(f"{x(p.t):.1f},{y(p.low):.1f}" for p in reversed(run))
            svg.add(f'<path class="band c{s.hue % HUES}" d="M{upper} L{lower}Z"/>')
    svg.add("</g>")

    svg.add('<g class="lines">')
    for s in drawn:
        cls = f"c{s.hue % HUES} d{s.dash % DASHES}"
        runs = _runs(s.points, step)
        # After "M x,y", further pairs are implicit line-tos: no "L" needed.
        path = "".join("M" + " ".join(f"{x(p.t):.1f},{y(p.rate):.1f}" for p in run) for run in runs if len(run) > 1)
        if path:
            svg.add(f'<path class="line {cls}" d="{path}"/>')
        dotted = s.points if len(s.points) <= DOTS_UP_TO else [r[0] for r in runs if len(r) == 1]
        for p in dotted:
            svg.add(f'<circle class="dot c{s.hue % HUES}" cx="{x(p.t):.1f}" cy="{y(p.rate):.1f}" r="2.5"/>')
    svg.add("</g>")

    if markers:
        svg.add('<g class="markers">')
        for m in markers:
            mx = left + (min(max(m.t, start), end) - start) / span * (right - left)
            svg.add(f'<line class="alert-rule" x1="{mx:.1f}" x2="{mx:.1f}" y1="{top}" y2="{bottom}"/>'
                    f'<path class="alert-flag" d="M{mx:.1f},{top} l-5,-9 h10 Z"/>'
                    f'<text class="alert-label" x="{mx + 7:.1f}" y="{top + 2}">{escape(m.label)}</text>')
        svg.add("</g>")

    ends = [(y(s.points[-1].rate), s) for s in drawn]
    svg.add('<g class="labels">')
    for ly, s in zip(spread([e[0] for e in ends], top + 4, bottom, LABEL_GAP), [e[1] for e in ends]):
        # A short sample of the line's dash pattern ties the label to its line without relying on colour.
        svg.add(f'<line class="line c{s.hue % HUES} d{s.dash % DASHES}" x1="{right + 6}" x2="{right + 26}" '
                f'y1="{ly:.1f}" y2="{ly:.1f}"/>'
                f'<text class="label c{s.hue % HUES}" x="{right + 30}" y="{ly + 4:.1f}">{escape(shorten(s.label))} '
                f"{escape(pct(s.points[-1].rate))}</text>")
    svg.add("</g>")
    return svg.text()


def bar_chart(bars: Sequence[Bar], *, title: str, width: int = WIDTH, empty: str = "Nothing to show") -> str:
    """Horizontal bars, longest first as given, each labelled at its end with `text`."""
    row, label_w, value_w, top = 24, 190, 230, 6
    height = max(len(bars), 1) * row + 2 * top
    label = f"{title}: " + ("; ".join(f"{b.label} {b.text}" for b in bars[:5]) if bars else empty.lower())
    if len(bars) > 5:
        label += f"; and {len(bars) - 5} more"
    svg = _Svg(width, height, label, "; ".join(f"{b.label}: {b.text}" for b in bars), "bar-chart")
    if not bars:
        svg.add(f'<text class="empty" x="{width / 2:.0f}" y="{height / 2 + 4:.0f}" text-anchor="middle">'
                f"{escape(empty)}</text>")
        return svg.text()
    most = max(b.value for b in bars) or 1.0
    span = width - label_w - value_w
    for i, b in enumerate(bars):
        y0 = top + i * row
        w = max(b.value / most * span, 1.0)
        svg.add(f'<text class="tick" x="{label_w - 8}" y="{y0 + 16}" text-anchor="end">'
                f"{escape(shorten(b.label))}</text>"
                f'<rect class="bar c{b.hue % HUES}" x="{label_w}" y="{y0 + 4}" width="{w:.1f}" height="{row - 8}"/>'
                f'<text class="value" x="{label_w + w + 6:.1f}" y="{y0 + 16}">{escape(b.text)}</text>')
    return svg.text()


def coverage_chart(rows: Sequence[Coverage], *, title: str, width: int = WIDTH) -> str:
    """Per group, two bars on one 0–100% scale: share of impressions with a vote, and with any implicit signal."""
    group_h, label_w, value_w, top, bar_h = 50, 190, 150, 26, 16
    height = max(len(rows), 1) * group_h + top + 8
    if rows:
        overall = rows[0]
        label = (f"{title}: {overall.label}: explicit {pct(overall.explicit[0])} of impressions have a vote, "
                 f"implicit {_at_least(overall)}{pct(overall.implicit[0])} have an implicit signal")
        if len(rows) > 1:
            gaps = sorted(rows[1:], key=lambda r: r.implicit[0] - r.explicit[0])
            label += (f"; gap from {pct(gaps[0].implicit[0] - gaps[0].explicit[0])} ({gaps[0].label}) "
                      f"to {pct(gaps[-1].implicit[0] - gaps[-1].explicit[0])} ({gaps[-1].label})")
    else:
        label = f"{title}: no impressions in this range"
    desc = "; ".join(f"{r.label} ({r.shown} impressions): explicit {pct(r.explicit[0])} "
                     f"({pct(r.explicit[1])}–{pct(r.explicit[2])}), implicit {_at_least(r)}{pct(r.implicit[0])} "
                     f"({pct(r.implicit[1])}–{pct(r.implicit[2])})" for r in rows)
    svg = _Svg(width, height, label, desc, "coverage-chart")
    if not rows:
        svg.add(f'<text class="empty" x="{width / 2:.0f}" y="{height / 2 + 4:.0f}" text-anchor="middle">'
                f"No impressions in this range</text>")
        return svg.text()
    span = width - label_w - value_w

    def x(rate: float) -> float:
        return label_w + min(max(rate, 0.0), 1.0) * span

    svg.add('<g class="grid">')
    for rate in (0.0, 0.25, 0.5, 0.75, 1.0):
        svg.add(f'<line x1="{x(rate):.1f}" x2="{x(rate):.1f}" y1="{top - 4}" y2="{height - 8}"/>'
                f'<text class="tick" x="{x(rate):.1f}" y="{top - 10}" text-anchor="middle">{rate * 100:.0f}%</text>')
    svg.add("</g>")
    for i, r in enumerate(rows):
        y0 = top + i * group_h
        svg.add(f'<text class="tick group" x="{label_w - 8}" y="{y0 + 24}" text-anchor="end">'
                f"{escape(shorten(r.label))}</text>")
        for j, (kind, (rate, low, high), hue) in enumerate((("explicit", r.explicit, 0), ("implicit", r.implicit, 1))):
            yb = y0 + 4 + j * (bar_h + 4)
            mid = yb + bar_h / 2
            note = _at_least(r) if kind == "implicit" else ""
            svg.add(f'<rect class="bar c{hue}" x="{label_w}" y="{yb}" width="{max(x(rate) - label_w, 1):.1f}" '
                    f'height="{bar_h}"/>'
                    f'<path class="whisker" d="M{x(low):.1f},{mid:.1f} H{x(high):.1f} M{x(low):.1f},{mid - 4:.1f} '
                    f'V{mid + 4:.1f} M{x(high):.1f},{mid - 4:.1f} V{mid + 4:.1f}"/>'
                    f'<text class="value" x="{max(x(high), x(rate)) + 6:.1f}" y="{mid + 4:.1f}">{kind} '
                    f"{escape(note)}{pct(rate)}</text>")
    return svg.text()


def rate_table(series: Sequence[Series], *, caption: str, bucket_label: str) -> str:
    """The numbers behind a rate chart: a row per bucket, a column per series; each cell rate, interval, impressions."""
    times = sorted({p.t for s in series for p in s.points})
    cells = {(s.label, p.t): p for s in series for p in s.points}
    head = "".join(f'<th scope="col">{escape(s.label)}</th>' for s in series)
    body = []
    for t in times:
        row = []
        for s in series:
            p = cells.get((s.label, t))
            row.append("<td>–</td>" if p is None else
                       f"<td>{pct(p.rate)} <span class=\"ci\">({pct(p.low)}–{pct(p.high)})</span> "
                       f"<span class=\"n\">{p.count}/{p.shown}</span></td>")
        body.append(f'<tr><th scope="row">{escape(_bucket_name(t, bucket_label))}</th>{"".join(row)}</tr>')
    return (f'<table class="numbers"><caption>{escape(caption)}</caption><thead><tr>'
            f'<th scope="col">{escape(bucket_label.capitalize())} (UTC)</th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def describe_change(series: Sequence[Series], start: float, end: float) -> str:
    """One phrase naming the series whose rate moved most between the first and the last third of the range.

    Thirds are pooled (counts summed) so one noisy bucket does not make the sentence.
    """
    if not series:
        return "no impressions in this range"
    first_end, last_start = start + (end - start) / 3, end - (end - start) / 3
    moves = []
    for s in series:
        first = _pooled(p for p in s.points if p.t < first_end)
        last = _pooled(p for p in s.points if p.t >= last_start)
        if first is not None and last is not None:
            moves.append((abs(last - first), s.label, first, last))
    if not moves:
        rates = [(_pooled(s.points) or 0.0, s.label) for s in series]
        high, who = max(rates)
        return f"highest {who} at {pct(high)}"
    delta, who, first, last = max(moves)
    if delta < 0.0005:
        return f"no series changed: {who} steady at {pct(last)}"
    verb = "rose" if last > first else "fell"
    return f"largest change: {who} {verb} from {pct(first)} to {pct(last)}"


def nice_scale(high: float) -> tuple[float, float]:
    """An axis maximum at or above `high` and a tick step dividing it into 2 to 5 round steps (e.g. 0.15, 0.05)."""
    high = max(high, 0.001)
    for step in (0.0005, 0.001, 0.002, 0.0025, 0.005, 0.01, 0.02, 0.025, 0.05, 0.1, 0.2, 0.25):
        top = math.ceil(high / step - 1e-9) * step
        if top / step <= 5:
            return min(top, 1.0), step
    return 1.0, 0.25


def spread(ys: Sequence[float], low: float, high: float, gap: float) -> list[float]:
    """Move label positions apart so neighbours are at least `gap` apart, staying within [low, high], keeping order."""
    order = sorted(range(len(ys)), key=lambda i: ys[i])
    placed = [ys[i] for i in order]
    for i in range(1, len(placed)):
        placed[i] = max(placed[i], placed[i - 1] + gap)
    overflow = placed[-1] - high if placed else 0
    if overflow > 0:
        placed = [p - overflow for p in placed]
        for i in range(len(placed) - 2, -1, -1):
            placed[i] = min(placed[i], placed[i + 1] - gap)
        placed = [max(p, low) for p in placed]
    result = [0.0] * len(ys)
    for i, p in zip(order, placed):
        result[i] = p
    return result


def shorten(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _at_least(row: Coverage) -> str:
    return "at least " if row.implicit_at_least else ""


def _pooled(points) -> float | None:
    shown = count = 0
    for p in points:
        shown += p.shown
        count += p.count
    return count / shown if shown else None


def _runs(points: Sequence[Point], step: float) -> list[list[Point]]:
    """Consecutive buckets together; a gap of more than one step starts a new run."""
    runs: list[list[Point]] = []
    for p in sorted(points, key=lambda p: p.t):
        if runs and p.t - runs[-1][-1].t <= step * 1.5:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


def _rate_desc(series: Sequence[Series], markers: Sequence[Marker]) -> str:
    parts = []
    for s in series:
        shown = sum(p.shown for p in s.points)
        count = sum(p.count for p in s.points)
        lo = min(s.points, key=lambda p: p.rate)
        hi = max(s.points, key=lambda p: p.rate)
        parts.append(f"{s.label}: {pct(count / shown)} over the range ({count} of {shown}); lowest {pct(lo.rate)} "
                     f"at {_bucket_name(lo.t, 'hour')}, highest {pct(hi.rate)} at {_bucket_name(hi.t, 'hour')}")
    parts += [f"{m.label}: {m.about or 'all'} at {_bucket_name(m.t, 'hour')}" for m in markers]
    return "; ".join(parts)


def _time_axis(start: float, end: float, left: float, right: float, bottom: float) -> str:
    span = end - start
    if span <= 2 * 86400:
        step, fmt = (3 * 3600 if span <= 86400 else 6 * 3600), "%H:%M"
    else:
        days = span / 86400
        step, fmt = 86400 * max(1, math.ceil(days / 10)), "%d %b"
    first = math.ceil(start / step) * step
    parts = [f'<g class="axis"><line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}"/>']
    t = first
    while t <= end:
        tx = left + (t - start) / span * (right - left)
        text = _utc(t).strftime(fmt).lstrip("0") if fmt == "%d %b" else _utc(t).strftime(fmt)
        parts.append(f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{bottom}" y2="{bottom + 4}"/>'
                     f'<text class="tick" x="{tx:.1f}" y="{bottom + 17}" text-anchor="middle">{text}</text>')
        t += step
    parts.append("</g>")
    return "".join(parts)


def _tick_pct(rate: float, step: float) -> str:
    decimals = 0 if step >= 0.01 else (1 if step >= 0.001 else 2)
    return f"{rate * 100:.{decimals}f}%"


def _bucket_name(t: float, bucket: str) -> str:
    when = _utc(t)
    if bucket == "week":
        return f"{when:%Y-%m-%d} – {_utc(t + 6 * 86400):%Y-%m-%d}"
    return f"{when:%Y-%m-%d}" if bucket == "day" else f"{when:%Y-%m-%d %H:00}"


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=timezone.utc)
