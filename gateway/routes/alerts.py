"""`GET /v1/alerts?state=open|resolved|all` (secret key): the drift detector's alerts (`gateway/alerts.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from gateway.core import Gateway, gateway_of
from gateway.routes import json_response
from gateway.routes.stats import invalid, single
from gateway.store.alerts import AlertOut

STATES = ("open", "resolved", "all")


class AlertList(msgspec.Struct):
    alerts: list[AlertOut]


def parse_state(params: Sequence[tuple[str, str]]) -> str:
    state = single(params, ("state",)).get("state", "open")
    if state not in STATES:
        raise invalid("state", f"one of {', '.join(STATES)}")
    return state


async def alerts_answer(gateway: Gateway, project_id: int, params: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The /v1/alerts answer for a project as plain values (the route's body; the dashboard's data)."""
    return msgspec.to_builtins(AlertList(await gateway.store.alerts.listed(project_id, parse_state(params))))


async def get_alerts(request: Request) -> Response:
    gateway = gateway_of(request)
    project, _ = await gateway.directory.server_auth(request)
    answer = await alerts_answer(gateway, project.id, request.query_params.multi_items())
    return json_response(answer)
