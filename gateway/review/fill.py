"""Filling a queue: read the candidates, plan the picks off the event loop, let the judge pre-label them, write them.

Used by `POST /v1/queues/{id}/fill` and by the daily auto-fill (`auto_fill_forever`), with the same steps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

import msgspec

from gateway import tasks
from gateway.analytics.rates import OUTLIER_MIN_VOTES
from gateway.messages import trace_text
from gateway.review.embed import Embedder, load_embedder
from gateway.review.judge import Judge, checked, load_judge
from gateway.review.plugins import PluginError
from gateway.review.queues import MAX_CANDIDATES, QueueSpec, plan_pairwise, plan_single, suggestion
from gateway.store import Store
from gateway.store.review import NewItem, QueueRow

log = logging.getLogger("backchannel.review")
MAX_LABELED = 5000  # novelty compares with at most the newest this many labeled traces
AUTO_FILL_EVERY_MS = 86_400_000
_encode = msgspec.json.Encoder().encode


def spec_of(queue: QueueRow) -> QueueSpec:
    return msgspec.json.decode(queue.spec, type=QueueSpec)


async def fill(store: Store, queue: QueueRow, *, judge: Judge | None, embedder: Embedder | None,
               now: int | None = None, min_votes: int = OUTLIER_MIN_VOTES) -> dict[str, Any]:
    """Fill the queue once; `{"added": N, "by_strategy": {...}}`. Items already in the queue are never added again
    (also when two fills run at once: the store keeps one item per key). `min_votes` is the outlier rule's
    (`BACKCHANNEL_OUTLIER_MIN_VOTES`)."""
    now = int(time.time() * 1000) if now is None else now
    spec = spec_of(queue)
    pairwise = spec.kind == "pairwise"
    matched, population, responses, in_queue, labeled = await store.review.fill_reads(
        queue.project_id, queue.id, spec.filter.resolve(now), pairwise=pairwise, min_votes=min_votes,
        limit=MAX_CANDIDATES, labeled_limit=MAX_LABELED)
    labeled_texts = [trace_text(input, output) for input, output in labeled]
    # Embedding and clustering take CPU seconds on thousands of candidates: not on the event loop.
    if pairwise:
        items = await asyncio.to_thread(plan_pairwise, spec, responses, {t.trace_id for t in matched},
                                        set(in_queue), labeled_texts, embedder)
    else:
        items = await asyncio.to_thread(plan_single, spec, matched, population, set(in_queue), labeled_texts,
                                        embedder)
    if judge is not None and items:
        items = await _prejudged(store, queue.project_id, items, judge)
    by_strategy = await store.review.add_items(queue.id, items, now) if items else {}
    return {"added": sum(by_strategy.values()), "by_strategy": by_strategy}


async def _prejudged(store: Store, project_id: int, items: list[NewItem], judge: Judge) -> list[NewItem]:
    taxonomy = await store.review.labels_of(project_id)
    traces: dict[str, dict[str, Any]] = {}
    for item in items:
        for trace_id in (item.a, item.b):
            if trace_id is not None and trace_id not in traces:
                trace = await store.get_trace(project_id, trace_id)
                if trace is not None:
                    traces[trace_id] = msgspec.to_builtins(trace)
    suggestions = await asyncio.to_thread(_judge_all, judge, traces, taxonomy)
    out = []
    for item in items:
        if item.b is None:
            found: Any = suggestions.get(item.a)
        else:
            found = {"a": suggestions.get(item.a), "b": suggestions.get(item.b)}
            found = found if any(found.values()) else None
        out.append(NewItem(item.key, item.a, item.b, item.strategy, None if found is None else _encode(found).decode()))
    return out


def _judge_all(judge: Judge, traces: Mapping[str, Mapping[str, Any]], taxonomy: Collection[str]
               ) -> dict[str, Any]:
    return {trace_id: checked(suggestion(judge, trace), taxonomy) for trace_id, trace in traces.items()}


async def auto_fill_once(store: Store, *, judge: Judge | None, embedder: Embedder | None, now: int,
                         min_votes: int = OUTLIER_MIN_VOTES) -> list[str]:
    """Fill every `auto_fill: "daily"` queue last filled a day or more ago (or never); the ids filled."""
    filled = []
    for queue in await store.review.queues_of(None):
        if spec_of(queue).auto_fill == "daily" and (queue.filled_at is None
                                                    or now - queue.filled_at >= AUTO_FILL_EVERY_MS):
            try:
                result = await fill(store, queue, judge=judge, embedder=embedder, now=now, min_votes=min_votes)
            except Exception:  # noqa: BLE001 - one queue's failure must not stop the others', nor the loop
                log.exception("auto-fill of queue %s failed", queue.id)
                continue
            log.info("auto-filled queue %s: %s", queue.id, result)
            filled.append(queue.id)
    return filled


async def auto_fill_forever(store: Store, *, judge: Judge | None, embedder: Embedder | None, interval: float,
                            min_votes: int = OUTLIER_MIN_VOTES, clock: Callable[[], float] = time.time) -> None:
    """Every `interval` seconds, `auto_fill_once`: a queue is filled within `interval` of being a day old."""
    while True:
        try:
            await auto_fill_once(store, judge=judge, embedder=embedder, now=int(clock() * 1000),
                                 min_votes=min_votes)
        except Exception:  # noqa: BLE001 - e.g. the store unavailable for a moment: try again next round
            log.exception("auto-fill round failed")
        await asyncio.sleep(interval)


class Reviewing:
    """The review loop's running parts: the judge and the embedder the settings name (loaded at start-up, so a bad
    name stops the gateway rather than a fill), and the auto-fill task."""

    def __init__(self, store: Store, *, judge: str, embedder: str, auto_fill_interval: float,
                 min_votes: int = OUTLIER_MIN_VOTES) -> None:
        try:
            self.judge = load_judge(judge)
        except (PluginError, TypeError) as exc:
            raise ValueError(f"BACKCHANNEL_JUDGE: {exc}") from None
        try:
            self.embedder = load_embedder(embedder) if embedder.strip() else None
        except (PluginError, TypeError) as exc:
            raise ValueError(f"BACKCHANNEL_EMBEDDER: {exc}") from None
        self._store = store
        self._interval = auto_fill_interval
        self.min_votes = min_votes
        self._task: asyncio.Task[None] | None = None

    async def fill(self, queue: QueueRow) -> dict[str, Any]:
        return await fill(self._store, queue, judge=self.judge, embedder=self.embedder, min_votes=self.min_votes)

    def start(self) -> None:
        if self._interval > 0:
            self._task = asyncio.create_task(auto_fill_forever(
                self._store, judge=self.judge, embedder=self.embedder, interval=self._interval,
                min_votes=self.min_votes),
                name="backchannel-auto-fill")

    async def stop(self) -> None:
        await tasks.cancel(self._task)
        self._task = None
