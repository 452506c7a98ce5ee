"""The HTTP routes, one module per resource; what they share is here."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response

_encode = msgspec.json.Encoder().encode


def json_response(value: Any, status: int = 200) -> Response:
    """`value` (a Struct, or what msgspec encodes) as an `application/json` answer."""
    return Response(_encode(value), status_code=status, media_type="application/json")
