"""The drift alerts' background task: a detector pass after each completed hour (and at start), and the alert webhook.

A pass feeds each project's completed hours, from the rollups, to `analytics.drift.advance`: one stream per
(model × template) and one for the project as a whole, per watched signal. It saves the detector's state and the
alerts it opened or resolved in one write (`store.alerts.save_pass`), so a restart resumes where the last pass ended. Each
new alert of a project with an alert webhook is POSTed there once, signed as Standard Webhooks
(`forwarding.webhook.signed_headers`), and retried with `gateway.backoff` until the receiver answers 2xx; the outbox
is in the store, so a restart resumes the retries too.

Hours are fed once, when they are complete: an event that arrives later for a trace of an hour already judged counts
in /v1/stats but not for the detector.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Iterable

import httpx
import msgspec

from gateway import tasks
from gateway.analytics import drift
from gateway.analytics.drift import HOUR, WATCHED, DriftSettings, HourCount
from gateway.backoff import Backoff, retry_after_at
from gateway.forwarding import WebhookSecret, iso_ms
from gateway.forwarding.crypto import CredentialsError, Vault
from gateway.forwarding.webhook import signed_headers
from gateway.store import Store
from gateway.store.alerts import AlertOut

log = logging.getLogger("backchannel.alerts")

SETTLE_SECONDS = 60  # a pass runs this long after the hour ends: requests of its last seconds have been committed
DELIVERY_BACKOFF = Backoff(base=1.0, cap=3600.0, give_up=math.inf)  # "until it is delivered"
WHOLE_PROJECT = "{}"

_encode = msgspec.json.Encoder().encode


def stream_key(model: str | None, template: str | None) -> str:
    """A (model, template) stream's key: the JSON object `/v1/alerts` answers as `key`."""
    return _encode({"model": model, "template": template}).decode()


def hour_streams(rows: Iterable[tuple[int, str | None, str | None, dict[str, int]]]) -> list[HourCount]:
    """Hourly rollup rows as the detector's input: per row one count per watched signal, and per hour the same for
    the whole project (the rows' sums)."""
    counts: list[HourCount] = []
    whole: dict[int, dict[str, int]] = {}
    for hour, model, template, totals in rows:
        key = stream_key(model, template)
        counts += [HourCount(hour, key, signal, totals["shown"], totals[signal]) for signal in WATCHED]
        total = whole.setdefault(hour, dict.fromkeys(totals, 0))
        for name, n in totals.items():
            total[name] += n
    for hour, totals in whole.items():
        counts += [HourCount(hour, WHOLE_PROJECT, signal, totals["shown"], totals[signal]) for signal in WATCHED]
    return counts


def webhook_request(alert: AlertOut, secret: str, now: float) -> tuple[bytes, dict[str, str]]:
    """The body and headers of an alert's webhook POST: `{"type": "alert.opened", "timestamp", "data": alert}`,
    signed as Standard Webhooks with the alert's id as `webhook-id` (the same on every retry)."""
    body = _encode({"type": "alert.opened", "timestamp": iso_ms(int(now * 1000)), "data": alert})
    return body, signed_headers(secret, alert.id, int(now), body)


class AlertWorker:
    """Runs the passes and deliveries; `start` and `stop` with the gateway. Tests call `run_pass` and
    `deliver_due` directly."""

    def __init__(self, store: Store, settings: DriftSettings, vault: Vault | None, *,
                 clock: Callable[[], float] = time.time, backoff: Backoff = DELIVERY_BACKOFF) -> None:
        self.store = store
        self.settings = settings
        self.vault = vault  # opens the webhooks' sealed signing secrets
        self.clock = clock
        self.backoff = backoff
        self._client: httpx.AsyncClient | None = None  # made at the first delivery
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="backchannel-alerts")

    async def stop(self) -> None:
        await tasks.cancel(self._task)
        self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def run_pass(self, now: float | None = None) -> list[drift.Alert]:
        """Feed every project's completed hours (those ending by `now`) to its detector; the alerts opened or
        resolved."""
        now = self.clock() if now is None else now
        end = int(now) - int(now) % HOUR
        changes = []
        for project in await self.store.list_projects():
            changes += await self.pass_project(project.id, end, now)
        return changes

    async def pass_project(self, project_id: int, end: int, now: float) -> list[drift.Alert]:
        next_hour, blob = await self.store.alerts.load_pass(project_id)
        start = next_hour if next_hour is not None else await self.store.stats.first_hour(project_id)
        if start is None or start >= end:
            return []
        rows = await self.store.stats.hour_counts(project_id, start, end)
        state = drift.load_state(blob) if blob else drift.DriftState()
        # In a thread: the first pass over weeks of history is a few hundred ms of arithmetic (docs/benchmarks.md).
        changes = await asyncio.to_thread(drift.advance, state, hour_streams(rows), self.settings)
        if not await self.store.alerts.save_pass(project_id, next_hour, end, drift.dump_state(state), changes, now):
            return []  # another process saved these hours first
        for change in changes:
            log.info("drift alert %s: project %d %s %s", change.state, project_id, change.key, change.signal)
        return changes

    async def deliver_due(self, now: float | None = None) -> int:
        """POST the alerts whose delivery is due; how many were delivered."""
        now = self.clock() if now is None else now
        delivered = 0
        for delivery in await self.store.alerts.due(now):
            error, retry_at = "", None
            try:
                if self.vault is None:
                    raise CredentialsError("BACKCHANNEL_ENCRYPTION_KEY is not set: alert webhooks need it")
                secret = self.vault.open(delivery.secret)
                assert isinstance(secret, WebhookSecret)
                body, headers = webhook_request(delivery.alert, secret.secret, now)
                if self._client is None:  # made once there is something to send: it loads the CA certificates
                    self._client = httpx.AsyncClient(timeout=10.0, follow_redirects=False)
                response = await self._client.post(delivery.url, content=body, headers=headers)
                if 200 <= response.status_code < 300:
                    await self.store.alerts.record(delivery.alert_id, delivered_at=now, next_at=now)
                    delivered += 1
                    continue
                error = f"HTTP {response.status_code}"
                retry_at = retry_after_at(response.headers.get("retry-after"), now)
            except (httpx.HTTPError, CredentialsError) as exc:
                error = str(exc) if isinstance(exc, CredentialsError) else type(exc).__name__
            next_at = self.backoff.next_attempt(delivery.attempts + 1, now, first_attempt_at=delivery.first_at,
                                                rand=random.random(), retry_after_at=retry_at)
            assert next_at is not None  # the delivery backoff never gives up
            log.warning("alert webhook for %s failed (%s); next try in %.0f s", delivery.alert.id, error, next_at - now)
            await self.store.alerts.record(delivery.alert_id, delivered_at=None, next_at=next_at, error=error)
        return delivered

    async def _run(self) -> None:
        next_pass = 0.0
        while True:
            now = self.clock()
            try:
                if now >= next_pass:
                    await self.run_pass(now)
                    hour_end = int(now) - int(now) % HOUR + HOUR
                    next_pass = hour_end + SETTLE_SECONDS
                await self.deliver_due(now)
                due = await self.store.alerts.next_due()
            except Exception:  # a pass that fails (store away) is tried again, not the end of alerting
                log.exception("drift alerts: pass or delivery failed; trying again in a minute")
                due, next_pass = now + 60, min(next_pass, now + 60)
            wait = min(next_pass, due if due is not None else math.inf) - self.clock()
            await asyncio.sleep(max(0.05, min(wait, 300.0)))

