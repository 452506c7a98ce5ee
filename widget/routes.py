"""Serving the widget: `GET /v1/widget.js` (short cache) and `GET /v1/widget.<version>.js` (immutable)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from widget.bundle import bundle

SHORT_CACHE = "public, max-age=300"
IMMUTABLE = "public, max-age=31536000, immutable"


def _accepted(header: str) -> set[str]:
    """Codings the client accepts (q > 0)."""
    accepted = set()
    for item in header.lower().split(","):
        name, _, params = item.strip().partition(";")
        q = params.strip().removeprefix("q=")
        try:
            if not params or float(q) > 0:
                accepted.add(name.strip())
        except ValueError:
            continue
    return accepted


async def widget_js(request: Request) -> Response:
    b = bundle()
    version = request.path_params.get("version")
    # An old version's URL gets today's script, but not forever: it is not what the URL promised.
    cache = IMMUTABLE if version == b.version else SHORT_CACHE
    accepted = _accepted(request.headers.get("accept-encoding", ""))
    if "br" in accepted:
        body, coding = b.brotli, "br"
    elif "gzip" in accepted or "*" in accepted:
        body, coding = b.gzip, "gzip"
    else:
        body, coding = b.raw, None
    etag = f'"{b.version}-{coding}"' if coding else f'"{b.version}"'
    headers = {
        "Cache-Control": cache,
        "ETag": etag,
        "Vary": "Accept-Encoding",
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
        "X-Content-Type-Options": "nosniff",
    }
    if coding:
        headers["Content-Encoding"] = coding
    # Any encoding of this version is the same script.
    current = {"*", f'"{b.version}"', f'"{b.version}-gzip"', f'"{b.version}-br"'}
    if any(tag.strip().removeprefix("W/") in current for tag in request.headers.get("if-none-match", "").split(",")):
        headers.pop("Content-Encoding", None)
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/javascript; charset=utf-8", headers=headers)


routes: list[BaseRoute] = [
    Route("/v1/widget.js", widget_js, methods=["GET", "HEAD"]),
    Route("/v1/widget.{version}.js", widget_js, methods=["GET", "HEAD"]),
]
