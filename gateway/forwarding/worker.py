"""The delivery worker (run in a process of its own, `process.py`): drains each destination's queue into it.

Outside the request path: ingest only stores events (a destination's queue is the log after its cursor,
`gateway/store/outbox.py`); this worker reads each queue, sends it with `gateway.forwarding.deliver`, and records what
happened through the writer, one write per round (the cursor moves; what it passes undelivered gets a row). Bounded: it
holds at most a round's records per destination (`Destination.round_size`) and works on at most `concurrency`
destinations at once, each with at most `concurrency` requests in flight. One trace's records go out in commit order: a
trace whose oldest queued record is waiting for its retry holds its later ones back. At-least-once: a record leaves its
queue only once its delivery is recorded, so a crash (SIGKILL included) resends what was in flight, under the same ids.

With several gateway processes on one database, only the holder of the `forwarding` lease (a row in the store, taken for
`lease_ttl` seconds and renewed well before) delivers; the others wait to take over.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import secrets
import socket
import time
from typing import Callable, Iterator

import httpx
import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway import tasks
from gateway.backoff import Backoff
from gateway.forwarding import Dead, Delivered, Destination, Outcome, create, deliver
from gateway.forwarding.crypto import CredentialsError, Vault
from gateway.store.outbox import DestinationCounts, Outbox, Outcomes, Parked, Pending, Retried, StoredDestination

log = logging.getLogger("backchannel.forwarding")

COUNTS_EVERY = 5.0  # seconds between reads of each destination's counts, for /metrics


def plan(pending: list[Pending], now: float) -> tuple[list[Pending], float | None]:
    """What to send now, in commit order, and when the earliest held-back record is due (None: none is).

    A trace whose oldest queued record is not due yet sends nothing: its later records would overtake it."""
    batch: list[Pending] = []
    blocked: set[int] = set()
    next_due: float | None = None
    for row in pending:
        if row.trace in blocked:
            continue
        if row.next_try_at > now:
            blocked.add(row.trace)
            next_due = row.next_try_at if next_due is None else min(next_due, row.next_try_at)
            continue
        batch.append(row)
    return batch, next_due


def settle(destination_id: str, batch: list[Pending], outcomes: dict[str, Outcome], now: float, backoff: Backoff,
           rand: Callable[[], float], upto: int = 0) -> Outcomes:
    """What the store records after one send: delivered records leave, retried ones get their next try (or die past
    the backoff's deadline), refused ones are parked with the answer's body; the cursor moves to `upto`."""
    delivered: list[int] = []
    retried: list[Retried] = []
    dead: list[Parked] = []
    last_error: str | None = None
    for row in batch:
        outcome = outcomes[row.record.event_id]
        attempts = row.attempts + 1
        if isinstance(outcome, Delivered):
            delivered.append(row.record.seq)
            continue
        last_error = outcome.error
        if isinstance(outcome, Dead):
            dead.append(Parked(row.record.seq, attempts, outcome.error, outcome.body))
            continue
        first = row.first_try_at if row.first_try_at is not None else now
        at = backoff.next_attempt(attempts, now, first_attempt_at=first, rand=rand(),
                                  retry_after_at=outcome.not_before)
        if at is None:
            dead.append(Parked(row.record.seq, attempts, f"gave up after {attempts} tries: {outcome.error}", ""))
        else:
            retried.append(Retried(row.record.seq, attempts, first, at))
    return Outcomes(destination_id, delivered, retried, dead, last_error, upto)


class Worker:
    """Delivers the outbox while the gateway runs: `start()` in its lifespan, `stop()` at shutdown.

    A supervisor loop (every `poll` seconds, or at `wake()`) reads the destinations, keeps the lease, and keeps one
    task per destination while this process holds it: a slow or dead destination holds back only its own queue."""

    def __init__(self, store: Outbox, vault: Vault | None, *, concurrency: int = 8, timeout: float = 10.0,
                 backoff: Backoff = Backoff(), lease_ttl: float = 10.0, poll: float = 0.5,
                 clock: Callable[[], float] = time.time, rand: Callable[[], float] = random.random) -> None:
        self.store = store
        self.vault = vault
        self.concurrency = concurrency
        self.timeout = timeout
        self.backoff = backoff
        self.lease_ttl = lease_ttl
        self.poll = poll
        self.clock = clock
        self.rand = rand
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.leading = False
        self.in_flight: collections.Counter[str] = collections.Counter()  # destination id -> records being sent
        self.totals: collections.Counter[str] = collections.Counter()  # delivered / retried / dead, this process
        self.counts: dict[str, tuple[StoredDestination, DestinationCounts]] = {}  # for /metrics, while leading
        self._lanes: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = {}  # destination id -> its task, wake-up
        self._slots = asyncio.Semaphore(concurrency)  # destinations being drained at once
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="backchannel-forwarding")

    def wake(self) -> None:
        """Look at the outbox now rather than at the next poll (e.g. after `retry-dead`)."""
        self._wake.set()
        for _, woken in self._lanes.values():
            woken.set()

    async def stop(self) -> None:
        await tasks.cancel(self._task)
        self._task = None
        if self.leading:
            try:
                await self.store.drop_lease(self.holder)
            except Exception as exc:  # the store may be closing; the lease then simply expires
                log.warning("could not release the forwarding lease: %s", exc)
            self.leading = False

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
            renewed = counted = 0.0
            try:
                while True:
                    try:
                        stored = await self.store.destinations()
                        if (stored or self.leading) and self.clock() - renewed > self.lease_ttl / 5:
                            renewed = await self._keep_lease()
                        self._keep_lanes(stored if self.leading else [], client)
                        if self.leading and self.clock() - counted > COUNTS_EVERY:
                            self.counts = {d.id: (d, found) for d in stored
                                           if (found := await self.store.counts(d.id)) is not None}
                            counted = self.clock()
                    except Exception:  # a store hiccup: the outbox keeps everything; try again soon
                        log.exception("forwarding supervisor failed")
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), self.poll)
                    except asyncio.TimeoutError:
                        pass
            finally:
                lanes = [task for task, _ in self._lanes.values()]
                self._keep_lanes([], client)
                await asyncio.gather(*lanes, return_exceptions=True)  # before the client closes under them

    async def _keep_lease(self) -> float:
        """Take or renew the lease; when it was renewed (0: not held)."""
        was = self.leading
        try:
            self.leading = await self.store.take_lease(self.holder, self.lease_ttl)
        except Exception:
            self.leading = False
            raise
        finally:
            if self.leading != was:
                log.info("this process %s delivers the outbox", "now" if self.leading else "no longer")
                if not self.leading:
                    self.counts = {}
        return self.clock() if self.leading else 0.0

    def _keep_lanes(self, stored: list[StoredDestination], client: httpx.AsyncClient) -> None:
        """One task per destination in `stored`; the others' tasks cancelled (what they had in flight is resent)."""
        wanted = {d.id: d for d in stored}
        for destination_id in set(self._lanes) - set(wanted):
            task, _ = self._lanes.pop(destination_id)
            task.cancel()
        for destination_id, destination in wanted.items():
            if destination_id not in self._lanes:
                woken = asyncio.Event()
                task = asyncio.create_task(self._lane(destination, client, woken), name=f"forward-{destination_id}")
                self._lanes[destination_id] = (task, woken)

    async def _lane(self, stored: StoredDestination, client: httpx.AsyncClient, woken: asyncio.Event) -> None:
        try:
            if self.vault is None:
                raise CredentialsError("BACKCHANNEL_ENCRYPTION_KEY is not set")
            destination = create(stored.kind, stored.url, self.vault.open(stored.credentials),
                                 frozenset(stored.signals))
        except (CredentialsError, ValueError) as exc:  # its records stay queued until the key is right
            log.error("destination %s cannot be delivered to: %s", stored.id, exc)
            await self.store.record_outcomes(Outcomes(stored.id, [], [], [], f"cannot deliver: {exc}"))
            return
        while True:
            try:
                async with self._slots:
                    wait = await self._drain(stored, destination, client)
            except Exception:
                log.exception("forwarding to %s failed", stored.id)
                wait = self.poll
            if wait > 0:
                woken.clear()
                try:
                    await asyncio.wait_for(woken.wait(), wait)
                except asyncio.TimeoutError:
                    pass

    async def _drain(self, stored: StoredDestination, destination: Destination, client: httpx.AsyncClient) -> float:
        """Send what is due of one destination; how long to wait before looking again (0: more is due now)."""
        size = destination.round_size
        window = await self.store.pending(stored.id, size)
        now = self.clock()
        batch, next_due = plan(window.records, now)
        # The round deals with the whole window (what it holds back behind a trace's retry gets a row), and a window
        # that did not fill waits for the next poll: rounds stay few and large while events trickle in.
        wait = self.poll if next_due is None else max(0.0, min(self.poll, next_due - now))
        if not batch:
            if window.end > window.cursor:  # events it does not want, or records held back: move past them
                await self.store.record_outcomes(Outcomes(stored.id, [], [], [], None, window.end))
            if len(window.records) == size and next_due is not None:  # a full window of waiting retries
                return next_due - now
            return wait
        self.in_flight[stored.id] += len(batch)
        try:
            outcomes = await deliver(destination, [row.record for row in batch], client,
                                     concurrency=self.concurrency, clock=self.clock)
            settled = settle(stored.id, batch, outcomes, self.clock(), self.backoff, self.rand, window.end)
            await self.store.record_outcomes(settled)
        finally:
            self.in_flight[stored.id] -= len(batch)
            if not self.in_flight[stored.id]:
                del self.in_flight[stored.id]
        self.totals.update(delivered=len(settled.delivered), retried=len(settled.retried), dead=len(settled.dead))
        if settled.last_error is not None:
            log.warning("destination %s (%s): %d delivered, %d to retry, %d dead; last error: %s", stored.id,
                        stored.kind, len(settled.delivered), len(settled.retried), len(settled.dead),
                        settled.last_error[:200])
        more = len(window.records) == size and (settled.delivered or settled.dead)
        return 0.0 if more else wait

    def progress(self) -> Progress:
        """What /metrics and `GET /v1/destinations/{id}` show of this worker now."""
        counts = {destination_id: (stored.kind, shown) for destination_id, (stored, shown) in self.counts.items()}
        return Progress(self.leading, dict(self.totals), dict(self.in_flight), counts)

    def collect(self) -> Iterator[Metric]:
        """`/metrics`: register the worker on the gateway's registry (`Metrics.registry.register(worker)`)."""
        return metrics_of(self.progress(), self.clock())


class Progress(msgspec.Struct, array_like=True):
    """A worker's state as the gateway shows it (the delivery process sends one each `PROGRESS_EVERY`)."""

    leading: bool = False
    totals: dict[str, int] = {}  # delivered / retried / dead, this process
    in_flight: dict[str, int] = {}  # destination id -> records being sent
    counts: dict[str, tuple[str, DestinationCounts]] = {}  # destination id -> (kind, counts), while leading


def metrics_of(progress: Progress, now: float) -> Iterator[Metric]:
    """The forwarding families of `/metrics`."""
    for name, doc in (("delivered", "Forwarded records delivered by this process."),
                      ("retried", "Forwarding tries that failed and were scheduled again."),
                      ("dead", "Forwarded records given up on (refused, or past 72 hours).")):
        yield CounterMetricFamily(f"backchannel_forward_{name}", doc, value=progress.totals.get(name, 0))
    in_flight = GaugeMetricFamily("backchannel_forward_in_flight", "Records being sent now, by destination.",
                                  labels=["destination"])
    for destination_id, count in sorted(progress.in_flight.items()):
        in_flight.add_metric([destination_id], count)
    yield in_flight
    families = {name: GaugeMetricFamily(f"backchannel_forward_{name}", doc, labels=["destination", "kind"])
                for name, doc in (("queued", "Records waiting in the outbox (read every few seconds)."),
                                  ("dead_records", "Dead records kept for the operator."),
                                  ("oldest_queued_age_seconds", "Age of the oldest queued record's event."))}
    for destination_id, (kind, counts) in sorted(progress.counts.items()):
        labels = [destination_id, kind]
        families["queued"].add_metric(labels, counts.queued)
        families["dead_records"].add_metric(labels, counts.dead)
        oldest = counts.oldest_queued_at
        families["oldest_queued_age_seconds"].add_metric(labels, 0 if oldest is None else now - oldest / 1000)
    yield from families.values()
