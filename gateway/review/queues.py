"""Annotation queues: what a queue is (`QueueSpec`), the items one fill adds, and the agreement a queue reports.

Pure: the store reads the traces and writes the items, a route or the scheduler calls these in between.

A queue's `filter` picks the candidates: `vote` (`up`/`down`: a current vote of that value), `reason` (a current
vote with that reason; with `vote`, the same vote), `signal` (an event of that type), `template` and `model`; a list
means any of them, and the fields all hold together. `since` and `until` bound the trace's `ts` (`since` inclusive,
`until` exclusive): ISO 8601, ms since the epoch, or a duration before the fill (`"7d"`, `"24h"`, `"30m"`), so a
daily fill of `{"vote": "down", "since": "7d"}` takes the last week's thumbs-down. Unless `include_flagged`, traces of
sessions flagged as outliers (the stats' rule) are left out, and their votes and signals match nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from gateway.messages import trace_text
from gateway.review.agreement import Agreement, label_agreement, nominal_agreement
from gateway.review.embed import Embedder
from gateway.review.sampling import Candidate, Response, Sampling, pairs, plan_fill
from gateway.store.review import FillTrace, NewItem, TraceFilter

log = logging.getLogger("backchannel.review")

# Clustering and novelty compare every candidate with every other: a fill reads at most this many (the newest).
MAX_CANDIDATES = 5000
MAX_LIST = 100
Name = Annotated[str, Meta(min_length=1, max_length=200)]
Label = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]
MAX_LABELS = 50
SIGNAL_TYPES = ("shown", "feedback", "copied", "edited", "regenerated", "rephrased", "abandoned", "accepted")
MAX_MS = 4_102_444_799_999  # as the schemas' client clocks: before 2100
Time = Annotated[str, Meta(max_length=40)] | Annotated[int, Meta(ge=0, le=MAX_MS)]
Signal = Literal["shown", "feedback", "copied", "edited", "regenerated", "rephrased", "abandoned", "accepted"]


def _one_or_many(kind: Any) -> Any:
    return kind | Annotated[list[kind], Meta(max_length=MAX_LIST)] | None


class Filter(Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    vote: _one_or_many(Literal["up", "down"]) = None
    signal: _one_or_many(Signal) = None
    reason: _one_or_many(Annotated[str, Meta(max_length=64)]) = None
    template: _one_or_many(Annotated[str, Meta(max_length=200)]) = None
    model: _one_or_many(Annotated[str, Meta(max_length=200)]) = None
    since: Time | None = None
    until: Time | None = None
    include_flagged: bool = False

    def __post_init__(self) -> None:
        for bound in (self.since, self.until):
            if isinstance(bound, str):
                parse_time(bound, 0)  # refused when the queue is made, not at its first fill

    def resolve(self, now_ms: int) -> TraceFilter:
        """The filter as the store takes it, with relative times taken back from `now_ms`."""
        def listed(value: Any) -> tuple[Any, ...]:
            return () if value is None else (value,) if isinstance(value, str) else tuple(value)

        return TraceFilter(
            since=0 if self.since is None else parse_time(self.since, now_ms),
            until=now_ms + 1 if self.until is None else parse_time(self.until, now_ms),
            votes=tuple(1 if vote == "up" else 0 for vote in listed(self.vote)), signals=listed(self.signal),
            reasons=listed(self.reason), templates=listed(self.template), models=listed(self.model),
            include_flagged=self.include_flagged)


class QueueSpec(Struct, forbid_unknown_fields=True, kw_only=True):
    """The body of `POST /v1/queues`."""

    name: Name
    kind: Literal["single", "pairwise"] = "single"
    filter: Filter = msgspec.field(default_factory=Filter)
    sampling: Sampling = msgspec.field(default_factory=Sampling)
    reviewers_per_item: Annotated[int, Meta(ge=1, le=20)] = 1
    lease_seconds: Annotated[int, Meta(ge=1, le=7 * 86400)] = 600
    instructions: Annotated[str, Meta(max_length=20_000)] = ""
    auto_fill: Literal["daily"] | None = None


_DURATION = re.compile(r"^(\d{1,6})([dhm])$")
_UNIT_MS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000}


def parse_time(value: str | int, now_ms: int) -> int:
    """ms since the epoch from ms, ISO 8601 (a time without a zone is UTC) or a duration before `now_ms`; ValueError
    otherwise."""
    if isinstance(value, int):
        if not 0 <= value <= MAX_MS:
            raise ValueError(f"{value} ms is not a time before 2100")
        return value
    duration = _DURATION.match(value.strip())
    if duration:
        return max(0, now_ms - int(duration.group(1)) * _UNIT_MS[duration.group(2)])
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is not a time: give ISO 8601, ms since the epoch, or a duration like 7d, 24h,"
                         " 30m") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return max(0, int(parsed.timestamp() * 1000))


def plan_single(spec: QueueSpec, matched: Sequence[FillTrace], population: Sequence[str], in_queue: Collection[str],
                labeled: Sequence[str], embedder: Embedder | None = None) -> list[NewItem]:
    """A single queue's fill: one item per picked trace (without the judge's suggestion yet)."""
    candidates = [Candidate(t.trace_id, trace_text(t.input, t.output), t.model, t.template) for t in matched]
    picks = plan_fill(spec.sampling, candidates, population, in_queue=in_queue, labeled=labeled, embedder=embedder)
    return [NewItem(pick.id, pick.id, None, pick.strategy, None) for pick in picks]


def plan_pairwise(spec: QueueSpec, responses: Sequence[FillTrace], matched_ids: Collection[str],
                  in_queue: Collection[str], labeled: Sequence[str], embedder: Embedder | None = None
                  ) -> list[NewItem]:
    """A pairwise queue's fill: pairs of responses to one prompt (`sampling.pairs`) in which either side matches the
    filter are the candidates; every pair in range is the random baseline's population."""
    by_id = {t.trace_id: t for t in responses}
    found = pairs((Response(t.trace_id, t.prompt_key, t.output, t.ts) for t in responses if t.prompt_key),
                  seed=spec.sampling.seed)
    by_key = {pair.key: pair for pair in found}
    candidates = []
    for pair in found:
        if pair.a in matched_ids or pair.b in matched_ids:
            a, b = by_id[pair.a], by_id[pair.b]
            candidates.append(Candidate(pair.key, trace_text(a.input, f"{a.output}\n{b.output}"), a.model, a.template))
    picks = plan_fill(spec.sampling, candidates, list(by_key), in_queue=in_queue, labeled=labeled, embedder=embedder)
    return [NewItem(pick.id, by_key[pick.id].a, by_key[pick.id].b, pick.strategy, None) for pick in picks]


def agreement(annotations: Iterable[tuple[int, str, list[str], str | None]], taxonomy: Sequence[str],
              pairwise: bool) -> dict[str, Any]:
    """A queue's inter-reviewer agreement from (item, reviewer, labels, preferred): per label of the taxonomy (and
    every other label given), and on the preferred side for a pairwise queue. None where no item has two reviewers."""
    given: dict[int, dict[str, list[str]]] = {}
    preferred: dict[int, dict[str, str]] = {}
    for item, reviewer, labels, side in annotations:
        given.setdefault(item, {})[reviewer] = labels
        if side is not None:
            preferred.setdefault(item, {})[reviewer] = side
    names = list(dict.fromkeys([*taxonomy, *(label for by in given.values() for labels in by.values()
                                             for label in labels)]))
    answer: dict[str, Any] = {"labels": {name: _agreement_json(value)
                                         for name, value in label_agreement(given, names).items()}}
    if pairwise:
        answer["preferred"] = _agreement_json(nominal_agreement(preferred))
    return answer


def _agreement_json(value: Agreement | None) -> dict[str, Any] | None:
    return None if value is None else value._asdict()


def suggestion(judge: Callable[[Mapping[str, Any]], Any], trace: Mapping[str, Any]) -> Any:
    """The judge's raw answer, or None when it raised: a judge is plug-in code, and one bad trace must not stop a
    fill."""
    try:
        return judge(trace)
    except Exception:  # noqa: BLE001 - see the docstring
        log.exception("the judge failed on trace %r; the item gets no suggestion", trace.get("trace_id"))
        return None
