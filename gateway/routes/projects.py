"""`GET /v1/projects/{pk}/config`: what the widget needs to draw itself. Public."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from gateway.core import gateway_of
from gateway.errors import HTTPProblem
from gateway.schemas import Labels, ProjectConfig

_encode = msgspec.json.Encoder().encode


async def project_config(request: Request) -> Response:
    project = await gateway_of(request).directory.project(request.path_params["public_key"])
    if project is None:
        raise HTTPProblem("not_found", "no project has this public key")
    config = ProjectConfig(public_key=project.public_key, require_token=project.require_token,
                           delay_ms=project.delay_ms, reasons=list(project.reasons), labels=Labels())
    return Response(_encode(config), media_type="application/json",
                    headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "public, max-age=60"})
