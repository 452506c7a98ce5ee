"""`GET/PUT /v1/projects/{pk}/labels`: the project's label taxonomy for reviewers (secret key)."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.core import gateway_of
from gateway.errors import HTTPProblem
from gateway.review.queues import MAX_LABELS, Label
from gateway.routes import json_response
from gateway.routes.queues import Caller, authorize, json_body


class LabelSet(Struct, forbid_unknown_fields=True):
    labels: Annotated[list[Label], Meta(min_length=1, max_length=MAX_LABELS)]


class Taxonomy(Struct):
    """The labels as stored (the answer of both routes)."""

    labels: list[str]


async def _caller(request: Request) -> Caller:
    caller = await authorize(request)
    if request.path_params["public_key"] != caller.project.public_key:
        raise HTTPProblem("not_found", "this secret key belongs to another project")
    return caller


async def get_labels(request: Request) -> Response:
    caller = await _caller(request)
    return json_response(Taxonomy(await gateway_of(request).store.review.labels_of(caller.project.id)))


async def put_labels(request: Request) -> Response:
    caller = await _caller(request)
    body = await json_body(request, LabelSet)
    labels = list(dict.fromkeys(body.labels))  # a repeated label is one label
    return json_response(Taxonomy(await gateway_of(request).store.review.set_labels(caller.project.id, labels)))


routes = [
    Route("/v1/projects/{public_key}/labels", get_labels, methods=["GET"]),
    Route("/v1/projects/{public_key}/labels", put_labels, methods=["PUT"]),
]
