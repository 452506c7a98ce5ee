"""Slow clients: a connection whose request head or body does not arrive within a deadline is answered 408 and closed.

uvicorn bounds only the idle time between requests (`timeout_keep_alive`); a client that opens a connection and sends
nothing, half a head, or a body a byte at a time holds its connection (and a file descriptor) for as long as it likes.
`guarded` adds the missing bound to an HTTP protocol class of uvicorn's without any work per request: one sweep per
interval looks at every open connection and closes those that have been waiting on the client, in the same state of
the same request, for longer than the deadline. So a slow request is closed between `seconds` and `seconds` plus one
interval after the sweep first saw it waiting.

It reads uvicorn's protocol attributes (`connections`, `cycle`, `timeout_keep_alive_task`, and the cycle's
`more_body`, `response_started`, `response_complete`), which its httptools and h11 protocols both have;
`tests/test_slowclients.py` runs it in a real uvicorn, so an upgrade that changes them fails there.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.errors import problem_body

# Waiting for the head (nothing, or part of it, arrived), or for the rest of the body.
HEAD, BODY = "head", "body"


def waiting_on_client(protocol: Any) -> tuple[int, str] | None:
    """What a connection is waiting for from its client, as (the request it belongs to, HEAD or BODY), or None when it
    waits on no one (idle between requests under uvicorn's own keep-alive timer, or the app is answering)."""
    cycle = protocol.cycle
    if cycle is None or cycle.response_complete:
        if protocol.timeout_keep_alive_task is not None:
            return None  # idle after a response: uvicorn closes it after `timeout_keep_alive`
        return id(cycle), HEAD
    if cycle.more_body:
        return id(cycle), BODY
    return None


def _timeout_response() -> bytes:
    status, body = problem_body("request_timeout", "the request's head or body did not arrive in time")
    return (b"HTTP/1.1 %d Request Timeout\r\ncontent-type: application/problem+json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, len(body), body))


class _Sweeper:
    def __init__(self, connections: set[Any], seconds: float, loop: asyncio.AbstractEventLoop) -> None:
        self.connections = connections  # uvicorn's own set of every open connection of the server
        self.seconds = seconds
        self.interval = min(1.0, seconds / 4)
        self.loop = loop
        self.seen: dict[Any, tuple[tuple[int, str], float]] = {}  # connection -> (what it waits for, since when)
        loop.call_later(self.interval, self.sweep)

    def sweep(self) -> None:
        now = self.loop.time()
        seen: dict[Any, tuple[tuple[int, str], float]] = {}
        for protocol in list(self.connections):
            waiting = waiting_on_client(protocol)
            if waiting is None or protocol.transport.is_closing():
                continue
            before = self.seen.get(protocol)
            since = before[1] if before is not None and before[0] == waiting else now
            if now - since < self.seconds:
                seen[protocol] = (waiting, since)
                continue
            cycle = protocol.cycle
            if cycle is None or cycle.response_complete or not cycle.response_started:
                protocol.transport.write(_timeout_response())
            protocol.transport.close()  # an app waiting for the body is told the client went away
        self.seen = seen
        if not self.loop.is_closed():
            self.loop.call_later(self.interval, self.sweep)


def guarded(base: type[asyncio.Protocol], seconds: float) -> type[asyncio.Protocol]:
    """`base` (one of uvicorn's HTTP protocol classes), closing connections whose request head or body has not
    arrived within `seconds`. 0 turns the bound off."""
    if seconds <= 0:
        return base
    sweepers: dict[asyncio.AbstractEventLoop, _Sweeper] = {}

    class Guarded(base):  # type: ignore[valid-type, misc]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            loop = self.loop
            if loop not in sweepers:
                sweepers.clear()  # a new loop (a test's new server): the old one's sweeper stops with it
                sweepers[loop] = _Sweeper(self.connections, seconds, loop)

    Guarded.__qualname__ = Guarded.__name__ = f"Guarded{base.__name__}"
    return Guarded
