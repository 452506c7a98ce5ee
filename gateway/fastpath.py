"""The two shortcuts the benchmarks justify, each leaning on another project's internals — kept here, together.

1. `GatewayApp` hands `POST /v1/events` (nearly all the traffic) straight to its endpoint, past Starlette's middleware
   and router: on a 1-event request they cost about as much as the gateway's own checks. So the app must have no
   middleware that request would skip: `GatewayApp` refuses to start with any (`tests/test_fastpath.py`).
2. `http_protocol()` is uvicorn's `auto` HTTP protocol, subclassed so each response's head and body leave in one write.
   It reads uvicorn's non-public `HTTP_PROTOCOLS` table; `tests/test_fastpath.py` runs it in a real uvicorn, so an
   upgrade that breaks it fails there. Measurements: docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncContextManager, AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

EVENTS_PATH = "/v1/events"
Lifespan = Callable[[Starlette], AsyncContextManager[None]]


class GatewayApp(Starlette):
    """Starlette, except that `POST /v1/events` at the root goes straight to `events_endpoint`, which answers its own
    errors. (Under a root path the router takes it, through a `Route` to the same endpoint.)"""

    def __init__(self, *, events_endpoint: ASGIApp, lifespan: Lifespan, **kwargs: Any) -> None:
        @contextlib.asynccontextmanager
        async def refusing_middleware(app: Starlette) -> AsyncIterator[None]:
            if self.user_middleware:  # added after create_app: it would never see the events route
                raise RuntimeError(f"{EVENTS_PATH} bypasses the middleware, so the gateway takes none; "
                                   f"got {self.user_middleware!r}")
            async with lifespan(app):
                yield

        super().__init__(lifespan=refusing_middleware, **kwargs)
        self._events = events_endpoint

    # A coroutine function on purpose: uvicorn tells ASGI 3 from ASGI 2 by it (a plain method returning the endpoint's
    # coroutine would save a frame, and get the app run as ASGI 2).
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == EVENTS_PATH:
            await self._events(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


class HeldWrites:
    """A transport that holds a write until the next write or the event loop's next turn, whichever comes first.

    uvicorn writes a response's status line and headers when the app sends `http.response.start`, and the body when
    it sends `http.response.body`: two send() calls, two TCP segments, two reads for the client. Held, the head
    leaves with the body that follows it at once (as every gateway answer's does), in one; the head of a response
    whose body is slow to come (a stream) still leaves at the end of the loop's turn.
    """

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._held: bytes | None = None
        self.is_closing = transport.is_closing  # asked once per response

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            self._held = bytes(data)  # the caller may reuse its buffer
            self._loop.call_soon(self._flush)
        else:
            self._held = None
            self._transport.writelines((held, data))  # one send (writev) for both

    def writelines(self, chunks: Any) -> None:
        self._flush()
        self._transport.writelines(chunks)

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def _flush(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            if not self._transport.is_closing():
                self._transport.write(held)

    def __getattr__(self, name: str) -> Any:  # the rest of asyncio.Transport, used rarely (get_extra_info, pausing)
        return getattr(self._transport, name)


def http_protocol() -> type[asyncio.Protocol]:
    """uvicorn's `auto` HTTP protocol (httptools when it is installed, else h11), writing through `HeldWrites`."""
    base: type[asyncio.Protocol] = import_from_string(HTTP_PROTOCOLS["auto"])

    class OneWriteProtocol(base):  # type: ignore[valid-type, misc]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(HeldWrites(transport))  # type: ignore[arg-type]

    OneWriteProtocol.__qualname__ = OneWriteProtocol.__name__ = f"OneWrite{base.__name__}"
    return OneWriteProtocol
