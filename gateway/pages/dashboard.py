"""The dashboard: filters in, the `/v1/stats` and `/v1/alerts` answers (plain dicts) in, page HTML out.

What it asks for (`Filters.stats_query`): the stats grouped by `model,template` and a time bucket. The bucket is the
**hour when the range is at most 7 days** (at most 168 points per line) **and the day otherwise**, so 30 days of hourly
data across several groups never reaches the page as hourly points; should hourly groups arrive for a longer range they
are summed into days here. Summing is exact: an impression belongs to the one hour of its trace's `ts`, so counts of
different buckets add up, and each summed bucket's interval is recomputed from its counts. The same holds across groups
(coverage and the "all impressions" row are sums of the groups).

At most `MAX_SERIES` lines per chart: the groups with the most impressions, the rest summed into one "other" line.
The tables under the charts list a row per hour, day or week: the finest that needs at most `TABLE_ROWS` rows.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Literal

from gateway.analytics.intervals import wilson
from gateway.analytics.rates import IMPLICIT_ANY, IMPLICIT_SIGNALS
from gateway.pages import charts
from gateway.pages.templates import render

Bucket = Literal["hour", "day", "week"]
SECONDS: dict[Bucket, int] = {"hour": 3600, "day": 86400, "week": 7 * 86400}

# Display names, in the order the charts appear: the signals that rise when answers get worse first.
SIGNALS: dict[str, str] = {
    "feedback_down": "Thumbs-down",
    "regenerated": "Regenerated",
    "rephrased": "Rephrased",
    "edited": "Edited",
    "abandoned": "Abandoned",
    "feedback_up": "Thumbs-up",
    "copied": "Copied",
    "accepted": "Accepted",
    IMPLICIT_ANY: "Any implicit signal",
    "feedback_any": "Any vote",
}
RANGES: dict[str, tuple[str, int]] = {
    "24h": ("Last 24 hours", 86400),
    "7d": ("Last 7 days", 7 * 86400),
    "14d": ("Last 14 days", 14 * 86400),
    "30d": ("Last 30 days", 30 * 86400),
    "90d": ("Last 90 days", 90 * 86400),
}
DEFAULT_RANGE = "14d"
HOURLY_UP_TO = 7 * 86400
MAX_SERIES = 8
TABLE_ROWS = 48
MAX_FILTER_CHARS = 200
FIRST_YEAR, LAST_YEAR = 2000, 2999  # any date a dashboard can mean, and every one of them a valid timestamp


@dataclass(frozen=True)
class Filters:
    range: str = DEFAULT_RANGE
    end: date | None = None  # the last day shown (UTC); None: up to now
    model: str = ""
    template: str = ""
    signal: str = ""  # "" shows every signal
    include_flagged: bool = False

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> tuple[Filters, dict[str, str]]:
        """Filters from a query string, and an error message per field that was not understood (its default used)."""
        errors: dict[str, str] = {}
        values: dict[str, Any] = {}
        range_ = params.get("range", DEFAULT_RANGE) or DEFAULT_RANGE
        if range_ in RANGES:
            values["range"] = range_
        else:
            errors["range"] = f"Choose one of the listed ranges ({', '.join(RANGES)})."
        end = params.get("end", "")
        if end:
            try:
                values["end"] = date.fromisoformat(end)
            except ValueError:
                errors["end"] = "Enter a date as YYYY-MM-DD, or leave it empty for today."
            else:
                if not FIRST_YEAR <= values["end"].year <= LAST_YEAR:
                    del values["end"]
                    errors["end"] = f"Enter a date between {FIRST_YEAR} and {LAST_YEAR}."
        for name in ("model", "template"):
            value = params.get(name, "").strip()
            if len(value) > MAX_FILTER_CHARS:
                errors[name] = f"At most {MAX_FILTER_CHARS} characters."
            else:
                values[name] = value
        signal = params.get("signal", "")
        if signal and signal not in SIGNALS:
            errors["signal"] = "Choose one of the listed signals."
        else:
            values["signal"] = signal
        values["include_flagged"] = params.get("include_flagged", "") in ("1", "true", "on")
        return cls(**values), errors

    @property
    def bucket(self) -> Literal["hour", "day"]:
        return "hour" if RANGES[self.range][1] <= HOURLY_UP_TO else "day"

    def window(self, now: float) -> tuple[float, float]:
        """[start, end) in unix seconds: ending at the next bucket boundary after now (or after the chosen day)."""
        step = SECONDS[self.bucket]
        if self.end is not None:
            end = datetime(self.end.year, self.end.month, self.end.day, tzinfo=timezone.utc).timestamp() + 86400
        else:
            end = (math.floor(now / step) + 1) * step
        return end - RANGES[self.range][1], end

    def stats_query(self, now: float) -> dict[str, str]:
        """The `/v1/stats` query string the page needs, as a dict."""
        start, end = self.window(now)
        query = {"group_by": f"model,template,{self.bucket}", "from": _iso(start), "to": _iso(end),
                 "include_flagged": "true" if self.include_flagged else "false"}
        if self.model:
            query["model"] = self.model
        if self.template:
            query["template"] = self.template
        return query

    def alerts_query(self) -> dict[str, str]:
        return {"state": "all"}


@dataclass
class _Cell:
    """Counts of one group in one bucket (or summed over several)."""

    shown: int = 0
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    reasons: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    implicit_bound: int = 0  # a lower bound of impressions with any implicit signal (see _coverage)

    def add(self, other: _Cell) -> None:
        self.shown += other.shown
        self.implicit_bound += other.implicit_bound
        for name, n in other.counts.items():
            self.counts[name] += n
        for name, n in other.reasons.items():
            self.reasons[name] += n


@dataclass(frozen=True)
class _Line:
    """One line of the rate charts: a (model, template) group, or the sum of the smaller ones."""

    label: str
    cells: Mapping[float, _Cell]
    hue: int
    dash: int


@dataclass(frozen=True)
class AlertRow:
    number: str
    key: str
    signal: str
    signal_name: str
    direction: str
    baseline: Mapping[str, Any]
    recent: Mapping[str, Any]
    detected_at: float | None
    detected_text: str
    state: str
    method: str


def render_dashboard(stats: Mapping[str, Any], alerts: Mapping[str, Any], filters: Filters, *, now: float,
                     errors: Mapping[str, str] | None = None, problem: str = "", page_path: str = "/dashboard",
                     sign_out_action: str = "", signed_in_as: str = "") -> str:
    """The dashboard page for one `/v1/stats` answer and one `/v1/alerts` answer, as HTML.

    `errors` (by filter name) and `problem` (the data could not be fetched) are shown inline.
    """
    context = dashboard_context(stats, alerts, filters, now=now)
    return render("dashboard.html", **context, errors=errors or {}, problem=problem, page_title="Dashboard",
                  page_path=page_path, sign_out_action=sign_out_action, signed_in_as=signed_in_as)


def dashboard_context(stats: Mapping[str, Any], alerts: Mapping[str, Any], filters: Filters, *,
                      now: float) -> dict[str, Any]:
    """What the dashboard template shows, computed from the two answers (pure)."""
    start, end = filters.window(now)
    bucket = filters.bucket
    step = SECONDS[bucket]
    cells = _cells(stats.get("groups") or [], bucket)
    lines = _top_groups(cells)
    total = _Cell()
    for group in cells.values():
        for cell in group.values():
            total.add(cell)
    alert_rows = _alert_rows(alerts.get("alerts") or [], filters, start, end)
    shown_signals = [filters.signal] if filters.signal else list(SIGNALS)
    period = charts.period(start, end)
    table_bucket = next(b for b in SECONDS if (end - start) / SECONDS[b] <= TABLE_ROWS or b == "week")

    rate_charts = []
    for signal in shown_signals:
        series = [charts.Series(line.label, _points(line.cells, signal), line.hue, line.dash) for line in lines]
        markers = [charts.Marker(a.detected_at, a.number, a.key) for a in alert_rows
                   if a.signal == signal and a.detected_at is not None and start <= a.detected_at < end]
        title = f"{SIGNALS[signal]} rate per model and template"
        table_series = [charts.Series(line.label, _points(_rebucket(line.cells, SECONDS[table_bucket], start), signal))
                        for line in lines]
        rate_charts.append({
            "signal": signal, "name": SIGNALS[signal],
            "svg": charts.rate_chart(series, title=title, start=start, end=end, step=step, markers=markers),
            "table": charts.rate_table(table_series, caption=f"{title}, {period}, per {table_bucket}",
                                       bucket_label=table_bucket),
        })

    coverage_rows = [_coverage("All impressions", total)] + [_coverage(line.label, _sum(line.cells)) for line in lines]
    coverage_rows = [row for row in coverage_rows if row is not None]
    down = total.counts.get("feedback_down", 0)
    reason_bars = [charts.Bar(code, n, f"{n}" + (f" · {charts.pct(n / down)} of thumbs-down" if down else ""))
                   for code, n in sorted(total.reasons.items(), key=lambda item: (-item[1], item[0]))]
    models = sorted({m for m, _ in cells} | ({filters.model} if filters.model else set()))
    templates = sorted({t for _, t in cells} | ({filters.template} if filters.template else set()))
    explicit = coverage_rows[0].explicit[0] if coverage_rows else None
    implicit = coverage_rows[0] if coverage_rows else None
    down_low, down_high = wilson(down, total.shown) if total.shown else (0.0, 0.0)
    return {
        "filters": filters,
        "range_options": [(value, name) for value, (name, _) in RANGES.items()],
        "model_options": [(m, m) for m in models], "template_options": [(t, t) for t in templates],
        "signal_options": list(SIGNALS.items()),
        "period": period, "bucket": bucket,
        "tiles": {
            "shown": total.shown,
            "down": charts.pct(down / total.shown) if total.shown else "–",
            "down_ci": f"{charts.pct(down_low)}–{charts.pct(down_high)}" if total.shown else "",
            "explicit": charts.pct(explicit) if explicit is not None else "–",
            "implicit": (("≥ " if implicit.implicit_at_least else "") + charts.pct(implicit.implicit[0]))
            if implicit else "–",
            "open_alerts": sum(1 for a in alert_rows if a.state == "open"),
            "flagged": int(stats.get("flagged_sessions") or 0),
        },
        "rate_charts": rate_charts,
        "alerts": alert_rows,
        "coverage_svg": charts.coverage_chart(coverage_rows, title=f"Explicit vs implicit coverage, {period}"),
        "coverage_lower_bound": bool(coverage_rows and coverage_rows[0].implicit_at_least),
        "reasons_svg": charts.bar_chart(reason_bars, title=f"Thumbs-down reasons, {period}",
                                        empty="No thumbs-down reasons in this range"),
        "series_count": len(cells),
        "max_series": MAX_SERIES,
    }


def _cells(groups: Sequence[Mapping[str, Any]], bucket: Bucket) -> dict[tuple[str, str], dict[float, _Cell]]:
    """The stats groups as (model, template) → bucket start → counts, summing hours into days when asked to."""
    cells: dict[tuple[str, str], dict[float, _Cell]] = defaultdict(dict)
    step = SECONDS[bucket]
    for group in groups:
        key = group.get("key") or {}
        when = key.get("hour", key.get("day"))
        t = _bucket_start(when)
        if t is None:
            continue
        shown = int(group.get("shown") or 0)
        if shown <= 0:
            continue
        t = math.floor(t / step) * step
        cell = _Cell(shown)
        for name, signal in (group.get("signals") or {}).items():
            cell.counts[name] = int(signal.get("count") or 0)
        cell.implicit_bound = max((cell.counts.get(name, 0) for name in IMPLICIT_SIGNALS), default=0)
        for code, n in (group.get("reasons") or {}).items():
            cell.reasons[str(code)] = int(n)
        series = cells[(_label(key.get("model")), _label(key.get("template")))]
        series.setdefault(t, _Cell()).add(cell)
    return cells


def _top_groups(cells: Mapping[tuple[str, str], dict[float, _Cell]]) -> list[_Line]:
    """At most MAX_SERIES lines: the groups with the most impressions, the others summed into one, each styled."""
    ranked = sorted(cells, key=lambda k: (-sum(c.shown for c in cells[k].values()), k))
    keep, rest = (ranked[:MAX_SERIES - 1], ranked[MAX_SERIES - 1:]) if len(ranked) > MAX_SERIES else (ranked, [])
    keep.sort()
    models = sorted({model for model, _ in keep})
    templates = sorted({template for _, template in keep})
    lines = []
    for i, (model, template) in enumerate(keep):
        # Hue by model and dash by template when there are several models, else hue by template.
        hue, dash = (models.index(model), templates.index(template)) if len(models) > 1 else (i, 0)
        lines.append(_Line(f"{model} · {template}", cells[(model, template)], hue, dash))
    if rest:
        other: dict[float, _Cell] = defaultdict(_Cell)
        for key in rest:
            for t, cell in cells[key].items():
                other[t].add(cell)
        lines.append(_Line(f"{len(rest)} other groups", dict(other), charts.HUES - 1, charts.DASHES - 1))
    return lines


def _rebucket(cells: Mapping[float, _Cell], step: int, origin: float) -> dict[float, _Cell]:
    """Cells summed into buckets of `step` seconds counted from `origin`."""
    summed: dict[float, _Cell] = defaultdict(_Cell)
    for t, cell in cells.items():
        summed[origin + math.floor((t - origin) / step) * step].add(cell)
    return summed


def _points(cells: Mapping[float, _Cell], signal: str) -> list[charts.Point]:
    points = []
    for t in sorted(cells):
        cell = cells[t]
        count = cell.counts.get(signal, 0)
        low, high = wilson(count, cell.shown)
        points.append(charts.Point(t, cell.shown, count, count / cell.shown, low, high))
    return points


def _sum(cells: Mapping[float, _Cell]) -> _Cell:
    total = _Cell()
    for cell in cells.values():
        total.add(cell)
    return total


def _coverage(label: str, cell: _Cell) -> charts.Coverage | None:
    """Share of impressions with a vote vs with an implicit signal. Without `implicit_any` in the stats, the largest
    single implicit signal's count is the best lower bound (an impression may carry several), and is marked as one."""
    if cell.shown <= 0:
        return None
    voted = cell.counts.get("feedback_any", 0)
    if IMPLICIT_ANY in cell.counts:
        implicit, at_least = cell.counts[IMPLICIT_ANY], False
    else:
        implicit, at_least = cell.implicit_bound, True
    return charts.Coverage(label, cell.shown, (voted / cell.shown, *wilson(voted, cell.shown)),
                           (implicit / cell.shown, *wilson(implicit, cell.shown)), at_least)


def _alert_rows(alerts: Sequence[Mapping[str, Any]], filters: Filters, start: float, end: float) -> list[AlertRow]:
    """The alerts the filters concern: open ones, and resolved ones detected within the range; open first."""
    kept = []
    for alert in alerts:
        key = alert.get("key") or {}
        signal = str(alert.get("signal", ""))
        if filters.signal and signal != filters.signal:
            continue
        if any(getattr(filters, f) and f in key and str(key[f]) != getattr(filters, f) for f in ("model", "template")):
            continue
        detected = _bucket_start(alert.get("detected_at"))
        state = str(alert.get("state", ""))
        if state != "open" and (detected is None or not start <= detected < end):
            continue
        kept.append((state != "open", -(detected or 0), alert, key, signal, detected, state))
    kept.sort(key=lambda k: k[:2])
    rows = []
    for i, (_, _, alert, key, signal, detected, state) in enumerate(kept, 1):
        label = " · ".join(_label(key[f]) for f in ("model", "template", "template_version") if f in key)
        label = label or " · ".join(f"{k}={v}" for k, v in key.items()) or "whole project"
        rows.append(AlertRow(f"A{i}", label, signal, SIGNALS.get(signal, signal), str(alert.get("direction", "")),
                             _side(alert.get("baseline")), _side(alert.get("recent")), detected,
                             _utc_text(detected), state, str(alert.get("method", ""))))
    return rows


def _side(value: Any) -> dict[str, Any]:
    value = value if isinstance(value, Mapping) else {}
    shown, count = int(value.get("shown") or 0), int(value.get("count") or 0)
    rate = value.get("rate")
    rate = float(rate) if isinstance(rate, (int, float)) else (count / shown if shown else 0.0)
    return {"shown": shown, "count": count, "rate": charts.pct(rate)}


def _label(value: Any) -> str:
    return "(none)" if value is None or value == "" else str(value)


def _bucket_start(value: Any) -> float | None:
    """Unix seconds of a bucket or time: ISO 8601 date or date-time (UTC when naive), or unix milliseconds/seconds."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return value / 1000 if value > 1e11 else float(value)
    if not isinstance(value, str):
        return None
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            return datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp()
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc_text(t: float | None) -> str:
    return "–" if t is None else datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
