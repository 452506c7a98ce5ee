"""`/metrics`: the gateway's Prometheus metrics, one `prometheus_client` registry per gateway.

The request path counts into plain dicts and ints, which a collector reads at each scrape: `prometheus_client`'s own
counters cost ~1 µs more per 1-event request and its histogram ~4 µs more per commit (docs/benchmarks.md).
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.schemas import EventResult

# Upper bounds of the histogram buckets.
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
STATUSES = ("accepted", "duplicate", "rejected")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


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

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        running, buckets = 0, []
        for bound, count in zip(self.buckets, self.counts):
            running += count
            buckets.append((f"{bound:g}", running))
        return HistogramMetricFamily(name, doc, buckets=[*buckets, ("+Inf", self.total)], sum_value=self.sum)


class Metrics(Collector):
    def __init__(self) -> None:
        self.events: Counter[str] = Counter()  # status -> count
        self.rejected: Counter[str] = Counter()  # error code -> count
        self.requests_failed: Counter[str] = Counter()  # whole-request error code -> count
        self.commit_batch = Histogram(BATCH_BUCKETS)
        self.commit_seconds = Histogram(LATENCY_BUCKETS)
        self._read: dict[str, tuple[Callable[[], float], str]] = {}
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def read_at_scrape(self, name: str, read: Callable[[], float], doc: str) -> None:
        """Show the counter `backchannel_<name>` as `read()` at each scrape (for counts kept elsewhere)."""
        self._read[name] = (read, doc)

    def count_results(self, results: Sequence[EventResult]) -> None:
        others = [result for result in results if result.status != "accepted"]  # most batches: none
        self.events["accepted"] += len(results) - len(others)
        for result in others:
            self.events[result.status] += 1
            if result.error:
                self.rejected[result.error] += 1

    def request_failed(self, code: str) -> None:
        self.requests_failed[code] += 1

    def observe_commit(self, events: int, seconds: float) -> None:
        self.commit_batch.observe(events)
        self.commit_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        yield _counter("backchannel_events", "Events answered, by status.", "status",
                       {status: self.events[status] for status in STATUSES})
        yield _counter("backchannel_events_rejected", "Rejected events, by error code.", "error", self.rejected)
        yield _counter("backchannel_requests_failed", "Whole requests refused, by error code.", "error",
                       self.requests_failed)
        yield CounterMetricFamily("backchannel_rate_limited", "Requests answered 429.",
                                  value=self.requests_failed["rate_limited"])
        yield self.commit_batch.family("backchannel_commit_batch_events", "Events per group commit.")
        yield self.commit_seconds.family("backchannel_commit_seconds", "Group commit latency.")
        for name, (read, doc) in sorted(self._read.items()):
            yield CounterMetricFamily(f"backchannel_{name.removesuffix('_total')}", doc, value=read())


def _counter(name: str, doc: str, label: str, counts: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family
