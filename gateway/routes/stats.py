"""`GET /v1/stats` (secret key): the rates a team decides on.

The numbers are defined in `gateway.analytics.rates` and counted from the store's rollups (`gateway/store/rollups.py`);
this module parses the query (every bad parameter is a 400 `invalid_parameter` naming it) and encodes the answer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from gateway.analytics.rates import DIMENSIONS, StatsQuery
from gateway.core import Gateway, gateway_of
from gateway.errors import HTTPProblem
from gateway.routes import json_response

MAX_FILTER_CHARS = 200  # as long as a trace's model or template may be
# Every instant a query can mean, in ms since the epoch: 1970-01-01 up to the end of year 9999.
LATEST_MS = 253_402_300_800_000
STATS_PARAMETERS = ("group_by", "from", "to", "include_flagged", "model", "template")


def invalid(name: str, detail: str) -> HTTPProblem:
    return HTTPProblem("invalid_parameter", f"{name}: {detail}")


def single(params: Sequence[tuple[str, str]], allowed: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in params:
        if name not in allowed:
            shown = name if len(name) <= 40 else name[:40] + "…"
            raise invalid(shown, f"unknown parameter (known: {', '.join(allowed)})")
        if name in found:
            raise invalid(name, "given more than once")
        found[name] = value
    return found


def parse_time(name: str, text: str) -> int:
    """ms since the epoch from ISO 8601 (a date, or a date-time; UTC without an offset) or from whole ms."""
    text = text.strip()
    if text.isascii() and text.isdigit():  # not "²" or "١٢٣", which isdigit() also takes
        ms = int(text) if len(text) <= len(str(LATEST_MS)) else LATEST_MS
    else:
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            raise invalid(name, "neither ISO 8601 (2026-11-30T05:00:00Z) nor ms since the epoch") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        ms = round(when.timestamp() * 1000)
    if not 0 <= ms < LATEST_MS:
        raise invalid(name, "out of range (1970 to 9999)")
    return ms


def _flag(name: str, text: str) -> bool:
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0", ""):
        return False
    raise invalid(name, "true or false")


def parse_stats_query(params: Sequence[tuple[str, str]], outlier_min_votes: int) -> StatsQuery:
    """The stats query of a query string (as (name, value) pairs); HTTPProblem naming the parameter if it is bad."""
    found = single(params, STATS_PARAMETERS)
    group_by: list[str] = []
    for part in found.get("group_by", "").split(","):
        part = part.strip()
        if not part:
            continue
        if part not in DIMENSIONS:
            raise invalid("group_by", f"{part[:40]!r} is not one of {', '.join(DIMENSIONS)}")
        if part in group_by:
            raise invalid("group_by", f"{part} is named twice")
        group_by.append(part)
    from_ms = parse_time("from", found["from"]) if "from" in found else None
    to_ms = parse_time("to", found["to"]) if "to" in found else None
    if from_ms is not None and to_ms is not None and from_ms >= to_ms:
        raise invalid("to", "must be after from")
    filters: dict[str, str | None] = {}
    for name in ("model", "template"):
        value = found.get(name)
        if value is not None and not 0 < len(value) <= MAX_FILTER_CHARS:
            raise invalid(name, f"1 to {MAX_FILTER_CHARS} characters")
        filters[name] = value
    return StatsQuery(group_by=tuple(group_by), from_ms=from_ms, to_ms=to_ms,  # type: ignore[arg-type]
                      include_flagged=_flag("include_flagged", found.get("include_flagged", "false")),
                      outlier_min_votes=outlier_min_votes, **filters)


async def stats_answer(gateway: Gateway, project_id: int, params: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The /v1/stats answer for a project as plain values (the route's body; the dashboard's data)."""
    query = parse_stats_query(params, gateway.settings.outlier_min_votes)
    return msgspec.to_builtins(await gateway.store.stats.answer(project_id, query))


async def get_stats(request: Request) -> Response:
    gateway = gateway_of(request)
    project, _ = await gateway.directory.server_auth(request)
    answer = await stats_answer(gateway, project.id, request.query_params.multi_items())
    return json_response(answer)
