"""A destination stand-in for `bench/run.py --destination`: answers every POST 200 after reading its body, as a
healthy PostHog `/batch/` would, so the benchmark measures the gateway's forwarding, not a real destination."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def accept(request: Request) -> Response:
    await request.body()
    return Response(b'{"status": 1}', media_type="application/json")


app = Starlette(routes=[Route("/{path:path}", accept, methods=["POST"])])
