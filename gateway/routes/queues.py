"""Annotation queues over HTTP: create, read, fill (secret key); claim, label, skip (a reviewer key, or the secret
key naming the reviewer). The rules of leases are the store's (`gateway/store/review.py`), of fills `review/fill.py`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Literal, TypeVar

import msgspec
from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.body import check_depth, check_media_type, read_body
from gateway.core import Gateway, gateway_of
from gateway.errors import HTTPProblem
from gateway.review.fill import spec_of
from gateway.review.judge import Suggestion
from gateway.review.queues import MAX_LABELS, Filter, Label, QueueSpec, agreement
from gateway.review.sampling import Sampling
from gateway.routes import json_response
from gateway.schemas import TraceOut
from gateway.store import Project
from gateway.store.review import Claimed, QueueRow

MAX_QUEUE_BYTES = 64 * 1024
MAX_ITEM_ID = 2**63 - 1
ReviewerName = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
T = TypeVar("T")
_encode = msgspec.json.Encoder().encode


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Caller:
    project: Project
    reviewer: str | None  # the reviewer key's name; None for the secret key


async def authorize(request: Request, *, reviewer_key: bool = False) -> Caller:
    """The caller of a route: the secret key (`Authorization: Bearer sk_...`), or, where `reviewer_key`, a live
    reviewer key (`rk_...`). A reviewer key on a secret-key route is refused (403)."""
    gateway = gateway_of(request)
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    credential = credential.strip()
    if scheme.lower() == "bearer" and credential.startswith("rk_"):
        reviewer = await gateway.store.review.reviewer_by_key(credential)
        live = reviewer is not None and reviewer.revoked_at is None
        project = await gateway.store.project_by_id(reviewer.project_id) if live else None
        if reviewer is None or project is None:
            raise HTTPProblem("unauthorized", "unknown or revoked reviewer key", {"WWW-Authenticate": "Bearer"})
        if not reviewer_key:
            raise HTTPProblem("forbidden", "a reviewer key may only claim, label and skip queue items, and read the"
                                           " traces of items it holds")
        return Caller(project, reviewer.name)
    project, _ = await gateway.directory.server_auth(request)
    return Caller(project, None)


async def trace_reader(request: Request, trace_id: str) -> Project:
    """The project whose trace `GET /v1/traces/{id}` may read: the secret key's, or a reviewer key's while the
    reviewer holds an item showing that trace."""
    caller = await authorize(request, reviewer_key=True)
    if caller.reviewer is not None and not await gateway_of(request).store.review.holds_trace(
            caller.reviewer, caller.project.id, trace_id, now_ms()):
        raise HTTPProblem("forbidden", "a reviewer key reads only the traces of the items it holds")
    return caller.project


async def json_body(request: Request, type: type[T], limit: int = MAX_QUEUE_BYTES, *, empty: T | None = None) -> T:
    """The request's JSON body as `type` (400 when it is not one); `empty` stands for an empty body when given."""
    headers = dict(request.scope["headers"])
    body = await read_body(request.receive, headers, limit)
    if not body.strip() and empty is not None:
        return empty
    check_media_type(request.scope["headers"], (b"application/json",), headers)
    check_depth(body)
    try:
        return msgspec.json.decode(body, type=type)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise HTTPProblem("malformed", f"body is not valid: {exc}") from None


async def queue_of(gateway: Gateway, caller: Caller, request: Request) -> QueueRow:
    queue = await gateway.store.review.queue_by_id(caller.project.id, request.path_params["queue_id"])
    if queue is None:
        raise HTTPProblem("not_found", "no such queue in this project")
    return queue


# --- The answers, as Structs: what the routes encode and what `gateway/openapi.py` documents ---

class ItemCounts(Struct):
    pending: int
    leased: int
    done: int
    skipped: int


class AgreementOut(Struct):
    """`gateway.review.agreement.Agreement` on the wire."""

    method: Literal["cohen_kappa", "krippendorff_alpha"]
    value: float | None
    items: int
    reviewers: int


class QueueAgreement(Struct):
    """Per label (None where no item has two reviewers); `preferred` only in a pairwise queue."""

    labels: dict[str, AgreementOut | None]
    preferred: AgreementOut | None | msgspec.UnsetType = msgspec.UNSET


class QueueOut(Struct, kw_only=True):
    """A queue as `GET /v1/queues/{id}` answers it: its spec, counts, per-strategy counts and agreement."""

    id: str
    name: str
    kind: Literal["single", "pairwise"]
    filter: Filter
    sampling: Sampling
    reviewers_per_item: int
    lease_seconds: int
    instructions: str
    auto_fill: Literal["daily"] | None
    created_at: int
    filled_at: int | None
    counts: ItemCounts
    by_strategy: dict[str, int]
    agreement: QueueAgreement


class QueueList(Struct):
    queues: list[QueueOut]


class FillResult(Struct):
    added: int
    by_strategy: dict[str, int]


class ClaimedQueue(Struct):
    id: str
    name: str
    kind: Literal["single", "pairwise"]
    instructions: str
    labels: list[str]


class ReviewedTrace(TraceOut, kw_only=True):
    """A trace exactly as `GET /v1/traces/{id}` answers it, with the judge's suggestion."""

    judge: Suggestion | None = None


class ClaimedItem(Struct, kw_only=True):
    """A claim's answer: `trace` for a single item, `a` and `b` for a pairwise one (None: the trace is gone)."""

    item_id: int
    lease_expires_at: int
    queue: ClaimedQueue
    trace: ReviewedTrace | None | msgspec.UnsetType = msgspec.UNSET
    a: ReviewedTrace | None | msgspec.UnsetType = msgspec.UNSET
    b: ReviewedTrace | None | msgspec.UnsetType = msgspec.UNSET


class ItemOutcome(Struct):
    item_id: int
    status: Literal["labeled", "skipped"]


async def queue_answer(gateway: Gateway, queue: QueueRow) -> QueueOut:
    spec = spec_of(queue)
    counts = await gateway.store.review.queue_counts(queue.id, now_ms())
    annotations = await gateway.store.review.queue_annotations(queue.id)
    taxonomy = await gateway.store.review.labels_of(queue.project_id)
    return QueueOut(id=queue.id, name=spec.name, kind=spec.kind, filter=spec.filter, sampling=spec.sampling,
                    reviewers_per_item=spec.reviewers_per_item, lease_seconds=spec.lease_seconds,
                    instructions=spec.instructions, auto_fill=spec.auto_fill, created_at=queue.created_at,
                    filled_at=queue.filled_at,
                    counts=ItemCounts(counts.pending, counts.leased, counts.done, counts.skipped),
                    by_strategy=counts.by_strategy,
                    agreement=msgspec.convert(agreement(annotations, taxonomy, pairwise=spec.kind == "pairwise"),
                                              QueueAgreement))


async def create_queue(request: Request) -> Response:
    gateway = gateway_of(request)
    caller = await authorize(request)
    spec = await json_body(request, QueueSpec)
    queue_id = await gateway.store.review.create_queue(caller.project.id, _encode(spec).decode(), now_ms())
    queue = await gateway.store.review.queue_by_id(caller.project.id, queue_id)
    assert queue is not None
    return json_response(await queue_answer(gateway, queue), 201)


async def list_queues(request: Request) -> Response:
    gateway = gateway_of(request)
    caller = await authorize(request)
    return json_response(QueueList([await queue_answer(gateway, q) for q in await gateway.store.review.queues_of(
        caller.project.id)]))


async def get_queue(request: Request) -> Response:
    gateway = gateway_of(request)
    caller = await authorize(request)
    return json_response(await queue_answer(gateway, await queue_of(gateway, caller, request)))


async def fill_queue(request: Request) -> Response:
    gateway = gateway_of(request)
    caller = await authorize(request)
    queue = await queue_of(gateway, caller, request)
    return json_response(FillResult(**await gateway.review.fill(queue)))


class AsReviewer(Struct, forbid_unknown_fields=True):
    """The claim or skip body: with the secret key, which reviewer acts; with a reviewer key, nothing (or `{}`)."""

    reviewer: ReviewerName | None = None


class LabelBody(Struct, forbid_unknown_fields=True):
    labels: Annotated[list[Label], Meta(max_length=MAX_LABELS)]
    note: Annotated[str, Meta(max_length=5000)] | None = None
    preferred: Literal["a", "b", "tie"] | None = None
    reviewer: ReviewerName | None = None


def acting_reviewer(caller: Caller, named: str | None) -> str:
    if caller.reviewer is not None:
        if named is not None and named != caller.reviewer:
            raise HTTPProblem("forbidden", "a reviewer key acts as its own reviewer only")
        return caller.reviewer
    if named is None:
        raise HTTPProblem("malformed", 'with the secret key, name the reviewer: {"reviewer": "..."}')
    return named


async def claimed_answer(gateway: Gateway, project_id: int, queue: QueueRow, claimed: Claimed) -> ClaimedItem:
    """What a claim answers: the item, its lease, the queue's instructions and labels, and the trace (a pairwise
    item: `a` and `b`) exactly as `GET /v1/traces/{id}` answers it, with the judge's suggestion as `judge`."""
    spec = spec_of(queue)
    judge = msgspec.json.decode(claimed.judge) if claimed.judge else None
    answer = ClaimedItem(item_id=claimed.item_id, lease_expires_at=claimed.lease_expires_at, queue=ClaimedQueue(
        queue.id, spec.name, spec.kind, spec.instructions, await gateway.store.review.labels_of(project_id)))
    sides = {"trace": (claimed.a, judge)} if claimed.b is None else {
        "a": (claimed.a, (judge or {}).get("a")), "b": (claimed.b, (judge or {}).get("b"))}
    for name, (trace_id, suggestion) in sides.items():
        trace = await gateway.store.get_trace(project_id, trace_id)
        setattr(answer, name, None if trace is None else ReviewedTrace(
            **{field: getattr(trace, field) for field in TraceOut.__struct_fields__}, judge=suggestion))
    return answer


async def claim(request: Request) -> Response:
    return await claim_as(request, await authorize(request, reviewer_key=True))


async def label_item(request: Request) -> Response:
    return await label_as(request, await authorize(request, reviewer_key=True))


async def skip_item(request: Request) -> Response:
    return await skip_as(request, await authorize(request, reviewer_key=True))


# The steps after authorizing, shared with the reviewer page (`gateway/pages/review.py`), which authorizes by cookie.

async def claim_as(request: Request, caller: Caller) -> Response:
    gateway = gateway_of(request)
    queue = await queue_of(gateway, caller, request)
    reviewer = acting_reviewer(caller, (await json_body(request, AsReviewer, empty=AsReviewer())).reviewer)
    claimed = await gateway.store.review.claim(queue.id, reviewer, spec_of(queue).lease_seconds * 1000, now_ms())
    if claimed is None:
        return Response(status_code=204)
    return json_response(await claimed_answer(gateway, caller.project.id, queue, claimed))


_OUTCOMES = {
    "not_found": ("not_found", "no such item in this queue"),
    "not_holder": ("not_lease_holder", "this reviewer does not hold the item: claim it first"),
    "lease_lost": ("lease_expired", "the lease expired and another reviewer took the item"),
    "preferred_missing": ("malformed", 'a pairwise item needs "preferred": "a", "b" or "tie"'),
    "preferred_unexpected": ("malformed", '"preferred" is for pairwise items only'),
}


def _item_id(request: Request) -> int:
    item_id: int = request.path_params["item_id"]
    if item_id > MAX_ITEM_ID:  # the path's digits may be any number; SQLite's rows are 64-bit
        raise HTTPProblem("not_found", "no such item in this queue")
    return item_id


def _outcome(item_id: int, outcome: str, status: str) -> Response:
    if outcome != "ok":
        raise HTTPProblem(*_OUTCOMES[outcome])
    return json_response(ItemOutcome(item_id, status))  # type: ignore[arg-type]


async def label_as(request: Request, caller: Caller) -> Response:
    gateway = gateway_of(request)
    queue = await queue_of(gateway, caller, request)
    body = await json_body(request, LabelBody)
    reviewer = acting_reviewer(caller, body.reviewer)
    taxonomy = await gateway.store.review.labels_of(caller.project.id)
    unknown = sorted(set(body.labels) - set(taxonomy))
    if unknown:
        raise HTTPProblem("unknown_label", f"not in the project's labels: {', '.join(unknown)}")
    item_id = _item_id(request)
    outcome = await gateway.store.review.label(queue.id, item_id, reviewer, sorted(set(body.labels)), body.note or None,
                                        body.preferred, spec_of(queue).reviewers_per_item, now_ms())
    return _outcome(item_id, outcome, "labeled")


async def skip_as(request: Request, caller: Caller) -> Response:
    gateway = gateway_of(request)
    queue = await queue_of(gateway, caller, request)
    reviewer = acting_reviewer(caller, (await json_body(request, AsReviewer, empty=AsReviewer())).reviewer)
    item_id = _item_id(request)
    return _outcome(item_id, await gateway.store.review.skip(queue.id, item_id, reviewer), "skipped")


routes = [
    Route("/v1/queues", create_queue, methods=["POST"]),
    Route("/v1/queues", list_queues, methods=["GET"]),
    Route("/v1/queues/{queue_id}", get_queue, methods=["GET"]),
    Route("/v1/queues/{queue_id}/fill", fill_queue, methods=["POST"]),
    Route("/v1/queues/{queue_id}/claim", claim, methods=["POST"]),
    Route("/v1/queues/{queue_id}/items/{item_id:int}/label", label_item, methods=["POST"]),
    Route("/v1/queues/{queue_id}/items/{item_id:int}/skip", skip_item, methods=["POST"]),
]
