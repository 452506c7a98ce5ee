"""The fast paths in `gateway/fastpath.py`, and what they rely on: Starlette's middleware, uvicorn's protocols."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import uvicorn
from starlette.middleware.base import BaseHTTPMiddleware

from gateway.app import create_app
from gateway.fastpath import HeldWrites, http_protocol
from gateway.settings import Settings
from tests.servers import free_port


# --- The router bypass ---------------------------------------------------------------------------------------------

async def lifespan_startup(app) -> dict:
    """Drive the app's ASGI lifespan to its startup answer (as uvicorn does), then shut it down."""
    messages = asyncio.Queue()
    await messages.put({"type": "lifespan.startup"})
    answers = []

    async def send(message):
        answers.append(message)
        if message["type"] != "lifespan.shutdown.complete":
            await messages.put({"type": "lifespan.shutdown"})

    try:
        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, messages.get, send)
    except RuntimeError:  # Starlette answers a failed startup, then raises what failed it
        assert answers[0]["type"] == "lifespan.startup.failed"
    return answers[0]


async def test_the_gateway_starts_without_middleware(tmp_path):
    app = create_app(Settings.load({}, db=str(tmp_path / "bc.db")))
    assert app.user_middleware == []
    assert (await lifespan_startup(app))["type"] == "lifespan.startup.complete"


async def test_a_middleware_the_events_route_would_skip_stops_the_gateway_at_start(tmp_path):
    class Tag(BaseHTTPMiddleware):
        async def dispatch(self, request, call_next):
            response = await call_next(request)
            response.headers["x-tag"] = "1"
            return response

    app = create_app(Settings.load({}, db=str(tmp_path / "bc.db")))
    app.add_middleware(Tag)
    answer = await lifespan_startup(app)
    assert answer["type"] == "lifespan.startup.failed"
    assert "bypasses the middleware" in answer["message"]


async def test_the_bypass_answers_as_the_router_would(harness):
    """POST /v1/events at the root skips the router; every other method and path still goes through it."""
    transport = httpx.ASGITransport(app=harness.app, root_path="/bc", client=("203.0.113.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        routed = await client.post("/bc/v1/events", json={"project": "pk_nope", "events": []},
                                   headers={"Origin": "https://x.example"})
    direct = await harness.send(project="pk_nope")
    assert routed.status_code == direct.status_code == 401
    assert routed.json() == direct.json()


# --- One write per response, in a real uvicorn ----------------------------------------------------------------------


class RecordingTransport(asyncio.Transport):
    """asyncio's transport contract, keeping each call that would reach the socket as one entry."""

    def __init__(self) -> None:
        super().__init__()
        self.sends: list[bytes] = []
        self.calls: list[str] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.sends.append(bytes(data))

    def writelines(self, chunks) -> None:
        self.sends.append(b"".join(chunks))

    def write_eof(self) -> None:
        self.calls.append("write_eof")

    def close(self) -> None:
        self.closing = True
        self.calls.append("close")

    def abort(self) -> None:
        self.closing = True
        self.calls.append("abort")

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 5)}.get(name, default)


async def next_turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_a_head_leaves_with_the_body_that_follows_it():
    transport = RecordingTransport()
    held = HeldWrites(transport)
    held.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert transport.sends == []
    held.write(b"{}")
    assert transport.sends == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
    await next_turn()  # the flush scheduled for the head finds nothing left
    assert transport.sends == [b"HTTP/1.1 200 OK\r\n\r\n{}"]


async def test_a_lone_write_leaves_at_the_next_turn_of_the_loop():
    transport = RecordingTransport()
    held = HeldWrites(transport)
    held.write(b"head")
    await next_turn()
    assert transport.sends == [b"head"]
    held.write(b"chunk 1")
    held.write(b"chunk 2")
    held.write(b"chunk 3")
    await next_turn()
    assert transport.sends == [b"head", b"chunk 1chunk 2", b"chunk 3"]  # in order, nothing lost


async def test_close_and_eof_flush_first_and_abort_drops():
    transport = RecordingTransport()
    held = HeldWrites(transport)
    held.write(b"last words")
    held.write_eof()
    assert transport.sends == [b"last words"] and transport.calls == ["write_eof"]
    held.write(b"bye")
    held.close()
    assert transport.sends == [b"last words", b"bye"] and transport.calls == ["write_eof", "close"]

    transport = RecordingTransport()
    held = HeldWrites(transport)
    held.write(b"never sent")
    held.abort()
    await next_turn()
    assert transport.sends == [] and transport.calls == ["abort"]


async def test_the_rest_of_the_transport_is_the_wrapped_one():
    transport = RecordingTransport()
    held = HeldWrites(transport)
    assert held.get_extra_info("peername") == ("127.0.0.1", 5)
    assert not held.is_closing()
    transport.closing = True
    assert held.is_closing()


# --- A real uvicorn with the protocol ------------------------------------------------------------------------------

@pytest.fixture
async def served():
    release = asyncio.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await receive()
        if scope["path"] == "/stream":  # the head goes out; the body waits for the test
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await release.wait()
            await send({"type": "http.response.body", "body": b"late", "more_body": False})
            return
        body = b'{"path": "%s"}' % scope["path"].encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        if scope["path"] == "/close":
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           http=http_protocol(), lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield port, release, server
    server.should_exit = True
    await task


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    return head, await reader.readexactly(length)


async def test_keep_alive_responses_arrive_whole_and_in_order(served):
    port, _, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        # Three requests in one write (pipelined): three answers, in order.
        writer.write(b"".join(b"GET /%d HTTP/1.1\r\nhost: x\r\n\r\n" % i for i in range(3)))
        for i in range(3):
            head, body = await read_response(reader)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert body == b'{"path": "/%d"}' % i
    finally:
        writer.close()


async def test_connection_close_still_sends_the_whole_answer(served):
    port, _, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /close HTTP/1.1\r\nhost: x\r\n\r\n")
    head, body = await read_response(reader)
    assert b"connection: close" in head.lower() and body == b'{"path": "/close"}'
    assert await reader.read() == b""  # then the server closes
    writer.close()


async def test_a_streamed_head_is_not_held_back_waiting_for_its_body(served):
    port, release, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in head
        release.set()
        assert await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), timeout=5) == b"4\r\nlate\r\n0\r\n\r\n"
    finally:
        writer.close()


def test_the_protocol_is_uvicorns_auto_one():
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    assert issubclass(http_protocol(), AutoHTTPProtocol)


async def test_uvicorn_serves_each_connection_through_held_writes(served):
    """If an upgrade of uvicorn stops passing our transport on (or renames what we override), this fails."""
    port, _, server = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n")
        await read_response(reader)
        (connection,) = server.server_state.connections
        assert isinstance(connection.transport, HeldWrites)
    finally:
        writer.close()
