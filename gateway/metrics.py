"""Prometheus text metrics, kept in-process (one gateway process = one scrape target)."""

from __future__ import annotations

from collections import Counter
from typing import Callable, Iterable

# Upper bounds of the histogram buckets.
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.total += 1
        self.sum += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break

    def lines(self, name: str) -> Iterable[str]:
        running = 0
        for bound, count in zip(self.buckets, self.counts):
            running += count
            yield f'{name}_bucket{{le="{bound:g}"}} {running}'
        yield f'{name}_bucket{{le="+Inf"}} {self.total}'
        yield f"{name}_sum {self.sum:.6f}"
        yield f"{name}_count {self.total}"


class Metrics:
    def __init__(self) -> None:
        self.events = Counter()  # status -> count
        self.rejected = Counter()  # error code -> count
        self.requests_failed = Counter()  # whole-request error code -> count
        self.commit_batch = Histogram(BATCH_BUCKETS)
        self.commit_seconds = Histogram(LATENCY_BUCKETS)
        self.gauges: dict[str, Callable[[], float]] = {}

    def observe_commit(self, events: int, seconds: float) -> None:
        self.commit_batch.observe(events)
        self.commit_seconds.observe(seconds)

    def render(self) -> str:
        out = [
            "# HELP backchannel_events_total Events answered, by status.",
            "# TYPE backchannel_events_total counter",
        ]
        for status in ("accepted", "duplicate", "rejected"):
            out.append(f'backchannel_events_total{{status="{status}"}} {self.events[status]}')
        out += ["# HELP backchannel_events_rejected_total Rejected events, by error code.",
                "# TYPE backchannel_events_rejected_total counter"]
        out += [f'backchannel_events_rejected_total{{error="{code}"}} {n}' for code, n in sorted(self.rejected.items())]
        out += ["# HELP backchannel_requests_failed_total Whole requests refused, by error code.",
                "# TYPE backchannel_requests_failed_total counter"]
        out += [f'backchannel_requests_failed_total{{error="{code}"}} {n}'
                for code, n in sorted(self.requests_failed.items())]
        out += ["# HELP backchannel_rate_limited_total Requests answered 429.",
                "# TYPE backchannel_rate_limited_total counter",
                f"backchannel_rate_limited_total {self.requests_failed['rate_limited']}"]
        out += ["# HELP backchannel_commit_batch_events Events per group commit.",
                "# TYPE backchannel_commit_batch_events histogram", *self.commit_batch.lines("backchannel_commit_batch_events")]
        out += ["# HELP backchannel_commit_seconds Group commit latency.",
                "# TYPE backchannel_commit_seconds histogram", *self.commit_seconds.lines("backchannel_commit_seconds")]
        for name, read in sorted(self.gauges.items()):
            out += [f"# TYPE backchannel_{name} counter", f"backchannel_{name} {read()}"]
        return "\n".join(out) + "\n"
