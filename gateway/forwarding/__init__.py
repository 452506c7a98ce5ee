"""Forwarding accepted signals to the tools teams already use: the interface every destination implements.

A destination turns a batch of outbox records into HTTP requests (`Destination.requests`) and judges each answer
(`Destination.classify`). `deliver` sends one batch and says, per record, what happened; the delivery worker owns the
outbox, the schedule (`gateway.backoff`) and the HTTP client. Nothing here touches the store.
"""

from __future__ import annotations

import asyncio
import functools
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
import msgspec
from msgspec import Struct

from gateway.backoff import retry_after_at

# What a destination can opt in to. `shown` is not forwarded: it is the denominator of Backchannel's own rates.
SIGNALS: tuple[str, ...] = ("feedback", "copied", "edited", "regenerated", "rephrased", "abandoned", "accepted")
DEFAULT_SIGNALS: frozenset[str] = frozenset({"feedback"})
MAX_ERROR_BODY = 4096  # bytes of a refusal's body kept for the operator


def parse_signals(text: str) -> frozenset[str]:
    """`"feedback,copied"` (the CLI's `--signals`) as a set; ValueError naming what is unknown."""
    signals = frozenset(s.strip() for s in text.split(",") if s.strip())
    unknown = sorted(signals - set(SIGNALS))
    if unknown or not signals:
        raise ValueError(f"unknown signals {unknown}; choose from {', '.join(SIGNALS)}" if unknown
                         else "name at least one signal")
    return signals


class OutboxRecord(Struct, frozen=True, kw_only=True):
    """One accepted event as the outbox hands it to a destination: the event joined with its trace."""

    seq: int  # commit order (unique, increasing): one trace's records go out in this order
    event_id: str  # canonical lower-case UUID: the idempotency key every destination de-duplicates on
    project: str  # the project's public key
    trace_id: str
    session_id: str
    type: str  # one of SIGNALS
    ts: int  # client time, ms since the epoch
    user_id: str | None = None  # from the trace
    model: str | None = None  # from the trace
    template: str | None = None  # from the trace
    value: int | None = None  # feedback: 1 up, 0 down
    reason: str | None = None  # feedback
    comment: str | None = None  # feedback, already scrubbed at ingest
    props: dict[str, Any] = msgspec.field(default_factory=dict)  # the event's own fields: length, dwell_ms, ...
    # A vote older (by client time) than the session's current one when it was read to be sent: a log entry, not the
    # current vote. Destinations that keep only the current vote (Langfuse's score) skip it.
    superseded: bool = False


# --- Credentials, one shape per kind; encrypted at rest (gateway.forwarding.crypto), never logged. ---

class _Credentials(Struct, frozen=True, tag_field="kind"):
    def __repr__(self) -> str:
        return f"{type(self).__name__}(***)"


class LangfuseKeys(_Credentials, tag="langfuse"):
    public_key: str
    secret_key: str


class PostHogKey(_Credentials, tag="posthog"):
    api_key: str


class WebhookSecret(_Credentials, tag="webhook"):
    secret: str  # "whsec_<base64>"


Credentials = LangfuseKeys | PostHogKey | WebhookSecret


# --- What a delivery attempt ends in. ---

class Delivered(Struct, frozen=True):
    pass


class Retry(Struct, frozen=True):
    error: str
    not_before: float | None = None  # from Retry-After, on the `now` clock


class Dead(Struct, frozen=True):
    error: str
    body: str = ""  # the refusal's body (up to MAX_ERROR_BODY bytes), for the operator


Outcome = Delivered | Retry | Dead


@dataclass(frozen=True)
class Request:
    """One HTTP request and the records it carries (by event id). Requests with the same `order` go out one after
    another, in the order given; requests with different ones may go out side by side."""

    url: str
    body: bytes
    event_ids: tuple[str, ...]
    headers: Mapping[str, str] = field(default_factory=dict)
    order: str = ""  # the trace id where a request carries one trace's records
    method: str = "POST"

    def __repr__(self) -> str:  # headers, and some webhook URLs (Slack's), hold credentials
        return f"Request({self.method} {_host(self.url)}, {len(self.event_ids)} records)"


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).hostname or "?"


def classify_response(status: int, headers: Mapping[str, str], body: bytes, now: float) -> Outcome:
    """2xx delivered; 408, 429 and 5xx retried (honouring Retry-After); any other answer is a refusal that retrying
    cannot fix: dead at once, with its body kept."""
    if 200 <= status < 300:
        return Delivered()
    text = body[:MAX_ERROR_BODY].decode("utf-8", "replace")
    if status in (408, 429) or status >= 500:
        return Retry(f"HTTP {status}: {text[:200]}", retry_after_at(headers.get("retry-after"), now))
    return Dead(f"HTTP {status}", text)


class Destination:
    """A place signals are forwarded to. Subclasses set `kind`, build requests, and may judge answers differently."""

    kind: ClassVar[str]
    # Queued records a delivery round reads and sends at most, due or not; each round's outcome is one write. Where a
    # request carries one record, a round stays short, so a gateway stopped mid-round resends little.
    round_size: ClassVar[int] = 100

    def __init__(self, url: str, signals: frozenset[str] = DEFAULT_SIGNALS) -> None:
        self.url = url.rstrip("/")
        self.signals = signals

    def requests(self, records: Sequence[OutboxRecord], now: float) -> list[Request]:
        """The requests that deliver `records`, in commit order. A record no request carries (a signal this destination
        did not opt in to, a superseded vote where only the current one matters) counts as delivered."""
        raise NotImplementedError

    def classify(self, status: int, headers: Mapping[str, str], body: bytes, now: float) -> Outcome:
        return classify_response(status, headers, body, now)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_host(self.url)!r})"


def create(kind: str, url: str, credentials: Credentials, signals: frozenset[str] = DEFAULT_SIGNALS) -> Destination:
    """The destination of `kind` with its (decrypted) credentials."""
    from gateway.forwarding.langfuse import Langfuse
    from gateway.forwarding.posthog import PostHog
    from gateway.forwarding.webhook import Webhook

    if kind == "langfuse" and isinstance(credentials, LangfuseKeys):
        return Langfuse(url, credentials, signals)
    if kind == "posthog" and isinstance(credentials, PostHogKey):
        return PostHog(url, credentials, signals)
    if kind == "webhook" and isinstance(credentials, WebhookSecret):
        return Webhook(url, credentials, signals)
    raise ValueError(f"no {kind!r} destination takes {type(credentials).__name__}")


async def deliver(destination: Destination, records: Sequence[OutboxRecord], client: httpx.AsyncClient, *,
                  concurrency: int = 8, clock: Callable[[], float] = time.time) -> dict[str, Outcome]:
    """Send one batch; the outcome per event id. One trace's requests go one after another, in commit order, and after
    the first that must be retried the rest of that trace's are not sent (they would overtake it): they share its
    outcome. A dead request stops nothing. Different traces go out side by side, at most `concurrency` at once."""
    outcomes: dict[str, Outcome] = {r.event_id: Delivered() for r in records}
    lanes: dict[str, list[Request]] = {}
    for request in destination.requests(records, clock()):
        lanes.setdefault(request.order, []).append(request)
    slots = asyncio.Semaphore(concurrency)

    async def send(request: Request) -> Outcome:
        async with slots:
            try:
                response = await client.request(request.method, request.url, content=request.body,
                                                headers=dict(request.headers))
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:  # no retry will fix the URL
                return Dead(f"{type(exc).__name__}: {exc}")
            except httpx.TransportError as exc:  # refused, reset, timed out: it may or may not have arrived
                return Retry(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        return destination.classify(response.status_code, response.headers, response.content, clock())

    async def run(lane: list[Request]) -> None:
        for i, request in enumerate(lane):
            outcome = await send(request)
            for carried in lane[i:] if isinstance(outcome, Retry) else [request]:
                outcomes.update(dict.fromkeys(carried.event_ids, outcome))
            if isinstance(outcome, Retry):
                return

    await asyncio.gather(*(run(lane) for lane in lanes.values()))
    return outcomes


def iso_ms(ms: int) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC with milliseconds: `2026-11-30T05:02:04.123Z`."""
    return f"{_iso_second(ms // 1000)}.{ms % 1000:03d}Z"


@functools.lru_cache(maxsize=4096)  # a batch's events mostly share their seconds
def _iso_second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
