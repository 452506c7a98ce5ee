"""The demo's seeded history: two weeks of simulated traffic in which `model-b` regresses part-way through.

`simulate` is pure (a seed and a time in, traces and events out); `seed_history` writes them through the `Store`
interface in large batches. Two models × two templates, about 40 impressions an hour each, with implicit signals at
typical rates (a third of answers copied, under 5% voted on); from `REGRESSION_AT` before the end, `model-b`'s
thumbs-down and regenerate rates rise, which the drift detector catches within a day. A few sessions vote on
everything alike and are flagged as outliers.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from gateway.schemas import TraceIn
from gateway.store import EventRow, Store

HOUR, DAY = 3600, 86400
DAYS = 14
REGRESSION_AT = 5 * DAY  # before the end of the history
MODELS = ("model-a", "model-b")
TEMPLATES = ("answer", "summarize")
PER_HOUR = 40  # impressions per (model, template) and hour, on average
RATES = {"copied": 0.32, "edited": 0.05, "regenerated": 0.07, "rephrased": 0.04, "abandoned": 0.06,
         "accepted": 0.12}
VOTE_RATE = 0.045
DOWN_SHARE = 0.35  # of votes
REGRESSED = {"regenerated": 0.14, "down_share": 0.7}  # model-b after the regression
REASONS = (("too_long", 0.4), ("wrong_information", 0.35), ("didnt_follow_instructions", 0.25))
OUTLIERS = 3  # sessions that vote down on every answer they see
BATCH = 5000


@dataclass
class History:
    traces: list[TraceIn] = field(default_factory=list)
    events: list[EventRow[uuid.UUID]] = field(default_factory=list)


def simulate(end: int, seed: int = 11, days: int = DAYS, per_hour: int = PER_HOUR) -> History:
    """Traces and events for the `days` days of hours before `end` (unix seconds, an hour's start)."""
    rng = random.Random(seed)
    history = History()
    start = end - days * DAY
    session, left = "", 0

    def event(trace: TraceIn, kind: str, at: int, **fields: object) -> None:
        history.events.append(EventRow(
            id=uuid.UUID(int=rng.getrandbits(128), version=4), trace_id=trace.trace_id, session_id=trace.session_id,
            type=kind, value=fields.get("value"), reason=fields.get("reason"), comment=None, props=None,  # type: ignore
            ts=at, ip_hash="demo"))

    for hour in range(start, end, HOUR):
        daily = 0.75 + 0.5 * abs(((hour // HOUR) % 24) - 12) / 12  # quieter at night (UTC)
        regressed = hour >= end - REGRESSION_AT
        for model in MODELS:
            for template in TEMPLATES:
                for _ in range(rng.randint(int(per_hour * daily * 0.8), int(per_hour * daily * 1.2))):
                    if left == 0:
                        session, left = f"demo-{uuid.UUID(int=rng.getrandbits(128), version=4)}", rng.randint(1, 8)
                    left -= 1
                    ts = (hour + rng.randrange(HOUR)) * 1000
                    trace = TraceIn(trace_id=f"demo-{len(history.traces)}", session_id=session, model=model,
                                    template=template, template_version="v2" if regressed and model == "model-b"
                                    else "v1", ts=ts)
                    history.traces.append(trace)
                    event(trace, "shown", ts + 500)
                    worse = regressed and model == "model-b"
                    for kind, rate in RATES.items():
                        if rng.random() < (REGRESSED.get(kind, rate) if worse else rate):
                            event(trace, kind, ts + rng.randrange(2_000, 60_000))
                    if rng.random() < VOTE_RATE:
                        down = rng.random() < (REGRESSED["down_share"] if worse else DOWN_SHARE)
                        reason = rng.choices([r for r, _ in REASONS], [w for _, w in REASONS])[0] if down else None
                        event(trace, "feedback", ts + rng.randrange(2_000, 60_000), value=0 if down else 1,
                              reason=reason)
    for n in range(OUTLIERS):
        bot = f"demo-outlier-{n}"
        for i in range(12):
            # Within the last days - 2 days: inside the dashboard's ranges, whose start is aligned to a day.
            hour = end - (1 + rng.randrange((days - 2) * 24)) * HOUR
            trace = TraceIn(trace_id=f"demo-outlier-{n}-{i}", session_id=bot, model=rng.choice(MODELS),
                            template=rng.choice(TEMPLATES), template_version="v1", ts=hour * 1000)
            history.traces.append(trace)
            event(trace, "shown", hour * 1000 + 500)
            event(trace, "feedback", hour * 1000 + 1500, value=0, reason="other")
    return history


def _batches(items: list, size: int = BATCH) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


async def seed_history(store: Store, project_id: int, end: int, **options: int) -> tuple[int, int]:
    """Write the simulated history into the project; returns (traces, events). With the writer process, the traces
    of a batch are sent together and ride a few group commits (one commit each without it: use the writer)."""
    history = simulate(end, **options)
    for traces in _batches(history.traces):
        await asyncio.gather(*(store.upsert_trace(project_id, trace) for trace in traces))
    for events in _batches(history.events):
        await store.write_events(project_id, events)
    return len(history.traces), len(history.events)
