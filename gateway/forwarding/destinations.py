"""Configuring destinations: what `POST /v1/destinations` and `backchannel destination add` take and answer, the
URL rule, the credentials to seal, and the marked test record. Shared by the route and the CLI."""

from __future__ import annotations

import ipaddress
import time
import urllib.parse
import uuid
from typing import Annotated, Literal, get_args

import httpx

import msgspec
from msgspec import Meta, Struct

from gateway.forwarding import (DEFAULT_SIGNALS, SIGNALS, Credentials, Dead, LangfuseKeys, OutboxRecord, PostHogKey,
                                Retry, WebhookSecret, create, deliver, parse_signals, webhook)
from gateway.store.outbox import DestinationCounts, StoredDestination

MAX_URL_CHARS = 2000
MAX_PER_PROJECT = 20  # each is a task of the delivery worker, reading its queue
Key = Annotated[str, Meta(min_length=1, max_length=500, pattern=r"^[^\x00-\x20]+$")]
Url = Annotated[str, Meta(min_length=1, max_length=MAX_URL_CHARS)]
Signal = Literal["feedback", "copied", "edited", "regenerated", "rephrased", "abandoned", "accepted"]
assert get_args(Signal) == SIGNALS, "the API's signal names are the forwarding module's"


class _New(Struct, tag_field="kind", forbid_unknown_fields=True, kw_only=True):
    url: Url
    signals: Annotated[list[Signal], Meta(min_length=1, max_length=len(SIGNALS))] | None = None


class NewLangfuse(_New, tag="langfuse"):
    public_key: Key
    secret_key: Key

    def __repr__(self) -> str:
        return f"NewLangfuse({self.url!r}, ***)"


class NewPostHog(_New, tag="posthog"):
    api_key: Key

    def __repr__(self) -> str:
        return f"NewPostHog({self.url!r}, ***)"


class NewWebhook(_New, tag="webhook"):
    pass


NewDestination = NewLangfuse | NewPostHog | NewWebhook
decode_new = msgspec.json.Decoder(NewDestination).decode


class DestinationCreated(Struct, omit_defaults=True):
    id: str
    kind: str
    url: str
    signals: list[str]
    secret: str | None = None  # a webhook's signing secret: shown only in this answer


class DeadRecord(Struct):
    event_id: str
    attempts: int
    error: str
    body: str  # the refusal's body, up to 4 KiB
    dead_at: int


class TestResult(Struct, omit_defaults=True):
    status: str  # "delivered", "retry" (the destination would be retried) or "dead" (it refused)
    event_id: str
    error: str | None = None
    body: str | None = None


class DestinationOut(Struct):
    id: str
    kind: str
    url: str
    signals: list[str]
    created_at: int
    queued: int
    in_flight: int | None  # None: another gateway process delivers (see the `forwarding` lease)
    delivered: int
    dead: int
    last_error: str | None
    last_error_at: int | None
    oldest_queued_age_s: float | None
    recent_dead: list[DeadRecord] | None = None  # in `GET /v1/destinations/{id}`: the newest 20


class DestinationList(Struct):
    destinations: list[DestinationOut]


def check_url(url: str) -> str:
    """`url` if it is an absolute http(s) URL without user info or fragment; ValueError saying what is wrong."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("url must be an absolute http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("url must not carry credentials; pass them as keys")
    if parts.fragment or any(c in url for c in " \t\r\n"):
        raise ValueError("url must have no fragment and no whitespace")
    try:
        parts.port
    except ValueError:
        raise ValueError("url has an invalid port") from None
    host = parts.hostname.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not all(label and len(label) <= 63 for label in host.split(".")):
            raise ValueError("url has an invalid host name") from None
    return url


def credentials_of(new: NewDestination) -> tuple[Credentials, str | None]:
    """The credentials to seal, and the webhook's new signing secret (to show once)."""
    if isinstance(new, NewLangfuse):
        return LangfuseKeys(new.public_key, new.secret_key), None
    if isinstance(new, NewPostHog):
        return PostHogKey(new.api_key), None
    secret = webhook.new_secret()
    return WebhookSecret(secret), secret


def signals_of(new: NewDestination) -> tuple[str, ...]:
    """The signals asked for, in SIGNALS order; ValueError naming unknown ones."""
    chosen = parse_signals(",".join(new.signals)) if new.signals is not None else DEFAULT_SIGNALS
    return tuple(s for s in SIGNALS if s in chosen)


def kind_of(new: NewDestination) -> str:
    return type(new).__struct_config__.tag  # type: ignore[return-value]


def shown(stored: StoredDestination, counts: DestinationCounts, in_flight: int | None, now_ms: int) -> DestinationOut:
    oldest = None if counts.oldest_queued_at is None else max(0.0, (now_ms - counts.oldest_queued_at) / 1000)
    return DestinationOut(id=stored.id, kind=stored.kind, url=stored.url, signals=list(stored.signals),
                          created_at=stored.created_at, queued=counts.queued, in_flight=in_flight,
                          delivered=counts.delivered, dead=counts.dead, last_error=counts.last_error,
                          last_error_at=counts.last_error_at, oldest_queued_age_s=oldest)


TEST_TRACE = "backchannel-test"


def test_record(public_key: str) -> OutboxRecord:
    """A vote marked as a test (`props.test`, trace and session `backchannel-test`), with a fresh id."""
    return OutboxRecord(seq=0, event_id=str(uuid.uuid4()), project=public_key, trace_id=TEST_TRACE,
                        session_id=TEST_TRACE, type="feedback", ts=int(time.time() * 1000), value=1,
                        comment="Backchannel test event", props={"test": True})


async def send_test(stored: StoredDestination, credentials: Credentials, timeout: float) -> TestResult:
    """Send one test record to the destination now, past the outbox; what it answered."""
    destination = create(stored.kind, stored.url, credentials, frozenset(stored.signals) | {"feedback"})
    record = test_record(stored.public_key)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
        outcome = (await deliver(destination, [record], client))[record.event_id]
    if isinstance(outcome, Dead):
        return TestResult("dead", record.event_id, outcome.error, outcome.body)
    if isinstance(outcome, Retry):
        return TestResult("retry", record.event_id, outcome.error)
    return TestResult("delivered", record.event_id)
