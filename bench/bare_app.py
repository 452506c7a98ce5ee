"""The baseline: a bare Starlette app that reads the request body and answers 204. `bench/run.py` serves it."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def events(request: Request) -> Response:
    await request.body()
    return Response(status_code=204)


app = Starlette(routes=[Route("/v1/events", events, methods=["POST"])])
