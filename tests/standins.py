"""Stand-ins for the tools signals are forwarded to: real HTTP servers (uvicorn in a thread, on a free loopback port)
that check every field of the documented request formats, answer malformed requests 400 (bad credentials 401) as the
real ones do, de-duplicate by id as the real ones do, and fail on purpose.

They check formats independently of gateway/forwarding (the webhook receiver verifies signatures with its own code),
so a mistake on our side cannot cancel itself out.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import datetime
import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.errors import problem_body
from gateway.schemas import DEFAULT_REASONS
from tests.servers import free_port, wait_for


class Malformed(Exception):
    """The request breaks the documented format: answered 400 with this message."""


class Unauthorized(Exception):
    pass


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float  # time.time() when the request arrived


class Standin:
    """One server. `fail(n, status)` makes the next n requests fail, `slow(s, n)` delays the next n answers (every
    answer without n), `stop()` refuses connections (the port stays ours), `start()` serves again."""

    routes: tuple[tuple[str, str], ...]  # (method, path) served by `handle`

    def __init__(self) -> None:
        self.port = free_port()
        self.seen: list[Seen] = []
        self.delay = 0.0
        self._slow_left: int | None = None
        self.in_flight = self.most_in_flight = 0  # requests being answered at once (the server is one event loop)
        self._failures: collections.deque[tuple[int, dict[str, str]]] = collections.deque()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(routes=[Route(path, self._endpoint, methods=[method]) for method, path in self.routes])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(self, times: int, status: int = 503, headers: dict[str, str] | None = None) -> None:
        self._failures.extend([(status, headers or {})] * times)

    def slow(self, seconds: float, times: int | None = None) -> None:
        self.delay, self._slow_left = seconds, times

    def start(self) -> Standin:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="error", lifespan="off",
                                ws="none", access_log=False, timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_for(lambda: self._server.started, what=f"{type(self).__name__} to listen")
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
        self._server = self._thread = None

    def __enter__(self) -> Standin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _endpoint(self, request: Request) -> Response:
        arrived, body = time.time(), await request.body()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if self.delay and self._slow_left != 0:
            if self._slow_left is not None:
                self._slow_left -= 1
            await asyncio.sleep(self.delay)
        self.in_flight -= 1
        if self._failures:
            status, headers = self._failures.popleft()
            response: Response = Response(f"failing on purpose with {status}", status_code=status, headers=headers)
        else:
            try:
                response = self.handle(request, body)
            except Malformed as exc:
                response = JSONResponse({"message": str(exc)}, status_code=400)
            except Unauthorized as exc:
                response = JSONResponse({"message": str(exc)}, status_code=401)
        self.seen.append(Seen(request.url.path, dict(request.headers), body, response.status_code, arrived))
        return response

    def handle(self, request: Request, body: bytes) -> Response:
        raise NotImplementedError


def _json_object(request: Request, body: bytes) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise Malformed("Content-Type must be application/json")
    try:
        value = json.loads(body)
    except ValueError:
        raise Malformed("body is not JSON") from None
    if not isinstance(value, dict):
        raise Malformed("body must be a JSON object")
    return value


def _only(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(obj) - allowed
    if unknown:
        raise Malformed(f"{where}: unknown fields {sorted(unknown)}")


def _string(obj: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise Malformed(f"{key} is required")
        return None
    if not isinstance(value, str) or not value:
        raise Malformed(f"{key} must be a non-empty string")
    return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class LangfuseStandin(Standin):
    """`POST /api/public/scores` (CreateScoreRequest): HTTP Basic, one score per request, upsert on `id`."""

    routes = (("POST", "/api/public/scores"),)
    FIELDS = {"id", "traceId", "sessionId", "observationId", "datasetRunId", "name", "value", "comment", "metadata",
              "environment", "queueId", "dataType", "configId", "source"}

    def __init__(self, public_key: str = "pk-lf-test", secret_key: str = "sk-lf-test") -> None:
        super().__init__()
        self.public_key, self.secret_key = public_key, secret_key
        self.scores: dict[str, dict[str, Any]] = {}  # by id: the latest write
        self.writes: list[dict[str, Any]] = []  # every accepted write, in order

    def handle(self, request: Request, body: bytes) -> Response:
        expected = "Basic " + base64.b64encode(f"{self.public_key}:{self.secret_key}".encode()).decode()
        if not hmac.compare_digest(request.headers.get("authorization", ""), expected):
            raise Unauthorized("Invalid public or secret key")
        score = _json_object(request, body)
        _only(score, self.FIELDS, "score")
        _string(score, "name", required=True)
        for key in ("id", "traceId", "sessionId", "observationId", "datasetRunId", "comment", "environment",
                    "configId"):
            _string(score, key)
        if not any(score.get(k) for k in ("traceId", "sessionId", "datasetRunId")):
            raise Malformed("a score needs traceId, sessionId or datasetRunId")
        if "metadata" in score and not isinstance(score["metadata"], dict):
            raise Malformed("metadata must be an object")
        value, data_type = score.get("value"), score.get("dataType")
        if data_type not in (None, "NUMERIC", "CATEGORICAL", "BOOLEAN", "TEXT"):
            raise Malformed(f"unknown dataType {data_type!r}")
        if data_type == "BOOLEAN" and not (_number(value) and value in (0, 1)):
            raise Malformed("a BOOLEAN score's value is 1 or 0")
        if data_type == "NUMERIC" and not _number(value):
            raise Malformed("a NUMERIC score's value is a number")
        if data_type in ("CATEGORICAL", "TEXT") and not isinstance(value, str):
            raise Malformed(f"a {data_type} score's value is a string")
        if data_type is None and not (_number(value) or isinstance(value, str)):
            raise Malformed("value must be a number or a string")
        score_id = score.get("id") or str(uuid.uuid4())
        self.scores[score_id] = score
        self.writes.append(score)
        return JSONResponse({"id": score_id})


def _iso_8601(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).tzinfo is not None
    except ValueError:
        return False


class PostHogStandin(Standin):
    """`POST /batch/` with the project API key in the body; de-duplicates on each event's `uuid` (first one kept)."""

    routes = (("POST", "/batch/"),)
    EVENT_FIELDS = {"event", "distinct_id", "timestamp", "uuid", "properties"}

    def __init__(self, api_key: str = "phc_test") -> None:
        super().__init__()
        self.api_key = api_key
        self.events: dict[str, dict[str, Any]] = {}  # by uuid
        self.duplicates = 0

    def handle(self, request: Request, body: bytes) -> Response:
        payload = _json_object(request, body)
        _only(payload, {"api_key", "batch", "historical_migration", "sent_at"}, "request")
        if payload.get("api_key") != self.api_key:
            raise Unauthorized("Project API key invalid")
        batch = payload.get("batch")
        if not isinstance(batch, list) or not batch:
            raise Malformed("batch must be a non-empty list")
        for event in batch:
            if not isinstance(event, dict):
                raise Malformed("each batch entry is an object")
            _only(event, self.EVENT_FIELDS, "event")
            _string(event, "event", required=True)
            _string(event, "distinct_id", required=True)
            if not _iso_8601(event.get("timestamp")):
                raise Malformed("timestamp must be ISO 8601 with a time zone")
            try:
                uuid.UUID(str(event.get("uuid")))
            except ValueError:
                raise Malformed("uuid must be a UUID") from None
            if not isinstance(event.get("properties"), dict):
                raise Malformed("properties must be an object")
        for event in batch:  # all checked first: a bad entry refuses the whole request, as PostHog does
            if event["uuid"] in self.events:
                self.duplicates += 1
            else:
                self.events[event["uuid"]] = event
        return JSONResponse({"status": 1})


class WebhookReceiver(Standin):
    """A receiver as Standard Webhooks describes it: checks signature and timestamp, de-duplicates on webhook-id."""

    routes = (("POST", "/hook"),)

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret
        self.deliveries: dict[str, dict[str, Any]] = {}  # by webhook-id
        self.duplicates = 0

    @property
    def url(self) -> str:
        return super().url + "/hook"

    def handle(self, request: Request, body: bytes) -> Response:
        msg_id = request.headers.get("webhook-id", "")
        stamp = request.headers.get("webhook-timestamp", "")
        signatures = request.headers.get("webhook-signature", "")
        if not (msg_id and stamp.isdigit() and signatures):
            raise Malformed("webhook-id, webhook-timestamp and webhook-signature are required")
        if abs(time.time() - int(stamp)) > 300:
            raise Unauthorized("timestamp too far from now")
        key = base64.b64decode(self.secret.removeprefix("whsec_"))
        expected = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest())
        if not any(s.startswith("v1,") and hmac.compare_digest(s[3:].encode(), expected) for s in signatures.split()):
            raise Unauthorized("no valid signature")
        payload = _json_object(request, body)
        _only(payload, {"type", "timestamp", "data"}, "payload")
        if not isinstance(payload.get("type"), str) or "." not in payload["type"]:
            raise Malformed("type is a dotted string")
        if not _iso_8601(payload.get("timestamp")) or not isinstance(payload.get("data"), dict):
            raise Malformed("timestamp (ISO 8601) and data (an object) are required")
        if msg_id in self.deliveries:
            self.duplicates += 1
        else:
            self.deliveries[msg_id] = payload
        return Response(status_code=204)


class EventsRecorder(Standin):
    """A gateway's `POST /v1/events` for server-side ingest, as the README describes it: Bearer secret key, answers per
    event (accepted; duplicate for an id it has seen; rejected invalid_reason for a reason not among the defaults)."""

    routes = (("POST", "/v1/events"),)

    def __init__(self, secret_key: str = "sk_test") -> None:
        super().__init__()
        self.secret_key = secret_key
        self.events: dict[str, dict[str, Any]] = {}

    def handle(self, request: Request, body: bytes) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.secret_key}":
            status, problem = problem_body("unauthorized", "a server route needs Bearer sk_...")
            return Response(problem, status_code=status, media_type="application/problem+json")
        payload = _json_object(request, body)
        _only(payload, {"project", "events"}, "batch")
        results = []
        for event in payload.get("events", []):
            canonical = str(uuid.UUID(event["id"]))
            if event.get("reason") not in (None, *(code for code, _ in DEFAULT_REASONS)):
                results.append({"id": canonical, "status": "rejected", "error": "invalid_reason"})
                continue
            status_text = "duplicate" if canonical in self.events else "accepted"
            self.events.setdefault(canonical, event)
            results.append({"id": canonical, "status": status_text})
        return JSONResponse({"results": results})
