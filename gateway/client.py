"""A small typed client for Backchannel's server routes, for backends, mobile apps and bots.

    from gateway.client import Backchannel
    with Backchannel("sk_...", "https://feedback.example.com") as bc:
        trace = bc.log_trace("t-42", "s-7", model="model-a", output=answer)   # trace.feedback_token for the page
        bc.feedback("t-42", "s-7", 0, reason="too_long")

`AsyncBackchannel` has the same methods as coroutines. Every call is retried on network errors, 408, 429 and 5xx with
exponential backoff and full jitter (honouring `Retry-After`), and an event keeps the id it was given on the first try,
so a retry of something that did arrive is answered `duplicate`, and stored once.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import Any, Callable, Literal, TypeVar

import httpx
import msgspec

from gateway.backoff import Backoff, retry_after_at
from gateway.messages import Input
from gateway.schemas import EventResult, EventResults, Problem, TraceCreated

SignalType = Literal["shown", "copied", "edited", "regenerated", "rephrased", "abandoned", "accepted"]
T = TypeVar("T")
_encode = msgspec.json.Encoder().encode


class BackchannelError(Exception):
    """The gateway refused the request (`status` and the problem's `code`), or could not be reached (`status` 0)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{code} ({status}): {detail}" if status else f"{code}: {detail}")
        self.status, self.code, self.detail = status, code, detail


class EventRejected(BackchannelError):
    """The gateway answered, and rejected this event: `code` is the per-event error, e.g. invalid_reason."""


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (version 7), as the widget makes them: the store's unique index grows at its end."""
    value = (time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | uuid.uuid4().int & ((1 << 76) - 1)
    return uuid.UUID(int=value & ~(0x3 << 62) | 0x2 << 62)  # RFC 9562 variant bits


def _retryable(response: httpx.Response | None) -> bool:
    return response is None or response.status_code in (408, 429) or response.status_code >= 500


def _refusal(response: httpx.Response) -> BackchannelError:
    try:
        problem = msgspec.json.decode(response.content, type=Problem)
        return BackchannelError(response.status_code, problem.type.rsplit(":", 1)[-1], problem.detail)
    except msgspec.DecodeError:
        return BackchannelError(response.status_code, "http_error", response.text[:200])


def _decode(response: httpx.Response, shape: type[T]) -> T:
    try:
        return msgspec.json.decode(response.content, type=shape)
    except msgspec.DecodeError as exc:  # e.g. a proxy's HTML page with a 200
        raise BackchannelError(response.status_code, "bad_answer", f"not a gateway answer: {exc}") from None


def _trace(response: httpx.Response) -> TraceCreated:
    if response.status_code not in (200, 201):
        raise _refusal(response)
    return _decode(response, TraceCreated)


def _event_result(response: httpx.Response) -> EventResult:
    if response.status_code != 200:
        raise _refusal(response)
    results = _decode(response, EventResults).results
    if len(results) != 1:
        raise BackchannelError(response.status_code, "bad_answer", f"{len(results)} results for one event")
    result = results[0]
    if result.status == "rejected":
        raise EventRejected(response.status_code, result.error or "rejected", f"event {result.id} was rejected")
    return result


class _Client:
    """What the sync and async clients share: the request bodies, the retry decision, the answers."""

    def __init__(self, secret_key: str, base_url: str, *, project: str | None, max_retries: int,
                 backoff: Backoff) -> None:
        if not secret_key.startswith("sk_"):
            raise ValueError("Backchannel's server routes take the project's secret key (sk_...)")
        self.base_url = base_url.rstrip("/")
        self.project = project
        self.max_retries = max_retries
        self.backoff = backoff
        self._headers = {"Authorization": f"Bearer {secret_key}", "Content-Type": "application/json"}

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}({self.base_url!r})"

    def _retry_in(self, attempt: int, response: httpx.Response | None, started: float) -> float | None:
        """Seconds to wait before trying again after the `attempt`-th try, or None: this answer is final."""
        if not _retryable(response) or attempt > self.max_retries:
            return None
        now = time.time()
        header = response.headers.get("retry-after") if response is not None else None
        at = self.backoff.next_attempt(attempt, now, first_attempt_at=started, rand=random.random(),
                                       retry_after_at=retry_after_at(header, now))
        return None if at is None else at - now

    @staticmethod
    def _trace_body(trace_id: str, session_id: str, fields: dict[str, Any]) -> bytes:
        return _encode({"trace_id": trace_id, "session_id": session_id,
                        **{k: v for k, v in fields.items() if v is not None}})

    def _event_body(self, type: str, trace_id: str, session_id: str, ts: int | None, fields: dict[str, Any]) -> bytes:
        event = {"id": str(uuid7()), "type": type, "trace_id": trace_id, "session_id": session_id,
                 "ts": int(time.time() * 1000) if ts is None else ts,
                 **{k: v for k, v in fields.items() if v is not None}}
        batch: dict[str, Any] = {"events": [event]}
        if self.project is not None:
            batch["project"] = self.project
        return _encode(batch)


_DEFAULT_BACKOFF = Backoff(base=0.25, cap=5.0, give_up=30.0)


class Backchannel(_Client):
    """The synchronous client. Use it as a context manager, or call `close()`."""

    def __init__(self, secret_key: str, base_url: str = "http://127.0.0.1:8000", *, project: str | None = None,
                 timeout: float = 10.0, max_retries: int = 4, backoff: Backoff = _DEFAULT_BACKOFF,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(secret_key, base_url, project=project, max_retries=max_retries, backoff=backoff)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def log_trace(self, trace_id: str, session_id: str, *, user_id: str | None = None, model: str | None = None,
                  template: str | None = None, template_version: str | None = None, input: Input | None = None,
                  output: str | None = None, metadata: dict[str, Any] | None = None,
                  ts: int | None = None, parent_trace_id: str | None = None) -> TraceCreated:
        """Log one generation (an idempotent upsert on `trace_id`); the answer carries its `feedback_token`.
        `input` is a string or chat messages; `parent_trace_id` names the trace a regeneration regenerates."""
        body = self._trace_body(trace_id, session_id, dict(
            user_id=user_id, model=model, template=template, template_version=template_version, input=input,
            output=output, metadata=metadata, ts=ts, parent_trace_id=parent_trace_id))
        return self._post("/v1/traces", body, _trace)

    def feedback(self, trace_id: str, session_id: str, value: Literal[0, 1] | bool, reason: str | None = None,
                 comment: str | None = None, *, ts: int | None = None) -> EventResult:
        """Record a vote (1 up, 0 down) of `session_id` on `trace_id`; EventRejected if the gateway refuses it."""
        body = self._event_body("feedback", trace_id, session_id, ts,
                                dict(value=int(value), reason=reason, comment=comment))
        return self._post("/v1/events", body, _event_result)

    def signal(self, type: SignalType, trace_id: str, session_id: str, *, ts: int | None = None,
               **props: Any) -> EventResult:
        """Record an implicit signal, e.g. `signal("copied", "t-42", "s-7", length=120)`."""
        return self._post("/v1/events", self._event_body(type, trace_id, session_id, ts, props), _event_result)

    def _post(self, path: str, body: bytes, answer: Callable[[httpx.Response], T]) -> T:
        started, attempt = time.time(), 0
        while True:
            attempt += 1
            response: httpx.Response | None = None
            try:
                response = self._http.post(path, content=body, headers=self._headers)
            except httpx.TransportError as exc:
                error = exc
            wait = self._retry_in(attempt, response, started)
            if wait is None:
                if response is None:
                    raise BackchannelError(0, "unreachable", f"{type(error).__name__}: {error}") from error
                return answer(response)
            time.sleep(wait)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Backchannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncBackchannel(_Client):
    """The asyncio client: the same methods as `Backchannel`, as coroutines. Use `async with`, or await `aclose()`."""

    def __init__(self, secret_key: str, base_url: str = "http://127.0.0.1:8000", *, project: str | None = None,
                 timeout: float = 10.0, max_retries: int = 4, backoff: Backoff = _DEFAULT_BACKOFF,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(secret_key, base_url, project=project, max_retries=max_retries, backoff=backoff)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)

    async def log_trace(self, trace_id: str, session_id: str, *, user_id: str | None = None,
                        model: str | None = None, template: str | None = None, template_version: str | None = None,
                        input: Input | None = None, output: str | None = None,
                        metadata: dict[str, Any] | None = None, ts: int | None = None,
                        parent_trace_id: str | None = None) -> TraceCreated:
        body = self._trace_body(trace_id, session_id, dict(
            user_id=user_id, model=model, template=template, template_version=template_version, input=input,
            output=output, metadata=metadata, ts=ts, parent_trace_id=parent_trace_id))
        return await self._post("/v1/traces", body, _trace)

    async def feedback(self, trace_id: str, session_id: str, value: Literal[0, 1] | bool, reason: str | None = None,
                       comment: str | None = None, *, ts: int | None = None) -> EventResult:
        body = self._event_body("feedback", trace_id, session_id, ts,
                                dict(value=int(value), reason=reason, comment=comment))
        return await self._post("/v1/events", body, _event_result)

    async def signal(self, type: SignalType, trace_id: str, session_id: str, *, ts: int | None = None,
                     **props: Any) -> EventResult:
        return await self._post("/v1/events", self._event_body(type, trace_id, session_id, ts, props), _event_result)

    async def _post(self, path: str, body: bytes, answer: Callable[[httpx.Response], T]) -> T:
        started, attempt = time.time(), 0
        while True:
            attempt += 1
            response: httpx.Response | None = None
            try:
                response = await self._http.post(path, content=body, headers=self._headers)
            except httpx.TransportError as exc:
                error = exc
            wait = self._retry_in(attempt, response, started)
            if wait is None:
                if response is None:
                    raise BackchannelError(0, "unreachable", f"{type(error).__name__}: {error}") from error
                return answer(response)
            await asyncio.sleep(wait)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncBackchannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
