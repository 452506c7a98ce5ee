"""The pages' static files, served by the gateway itself (no CDN: pages work offline).

Each file is read once and named by its content hash (`pages.3f2a1b9c04.css`): that name is cached for a year as
immutable, so a new release's pages fetch new names. The plain name (`pages.css`) is served too, revalidated by ETag.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

HERE = Path(__file__).parent / "static"
URL_PATH = "/dashboard/static"  # where `routes.dashboard_routes` serves them, for every page (the reviewer's too)
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


@dataclass(frozen=True)
class Asset:
    name: str
    hashed_name: str
    body: bytes
    media_type: str

    @property
    def etag(self) -> str:
        return f'"{self.hashed_name}"'


@cache
def assets() -> dict[str, Asset]:
    """Every static file by its plain name and by its hashed name."""
    found: dict[str, Asset] = {}
    for path in sorted(HERE.iterdir()):
        if not path.is_file():
            continue
        body = path.read_bytes()
        digest = hashlib.sha256(body).hexdigest()[:10]
        hashed = f"{path.stem}.{digest}{path.suffix}"
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if media_type.startswith("text/") or media_type.endswith("javascript"):
            media_type += "; charset=utf-8"
        asset = Asset(path.name, hashed, body, media_type)
        found[path.name] = found[hashed] = asset
    return found


def static_url(name: str) -> str:
    """The URL of static file `name` under its content-hashed name (a KeyError for a file that does not exist)."""
    return f"{URL_PATH}/{assets()[name].hashed_name}"


async def static_file(request: Request) -> Response:
    name = request.path_params["name"]
    asset = assets().get(name)
    if asset is None:
        return Response("no such file", status_code=404, media_type="text/plain")
    headers = {"Cache-Control": IMMUTABLE if name == asset.hashed_name else REVALIDATE, "ETag": asset.etag,
               "X-Content-Type-Options": "nosniff"}
    if asset.etag in (tag.strip().removeprefix("W/") for tag in request.headers.get("if-none-match", "").split(",")):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)
