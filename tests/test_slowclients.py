"""Slow clients against a real uvicorn gateway, over raw sockets: a request head or body that does not arrive within
BACKCHANNEL_READ_TIMEOUT is answered 408 and its connection closed; idle keep-alive connections and concurrency are
bounded; the gateway raises its open-files limit."""

from __future__ import annotations

import resource
import socket
import time
from pathlib import Path

import pytest

from tests.servers import GatewayProcess, wait_for
from tests.test_faults import create_project

WAIT = 15.0  # seconds a test waits for the close it expects (the timeouts under test are 1 s)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    db = tmp_path_factory.mktemp("slow") / "bc.db"
    gw = GatewayProcess(db, env={"BACKCHANNEL_READ_TIMEOUT": "1", "BACKCHANNEL_TIMEOUT_KEEP_ALIVE": "1"})
    gw.secret = create_project(str(db))["secret_key"]
    # Started with a low soft limit on open files, which the gateway must raise to the hard limit itself.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    try:
        gw.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    yield gw
    gw.stop()
    assert "Traceback" not in Path(gw.log.name).read_text()


def connect(gw: GatewayProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=WAIT)
    sock.settimeout(WAIT)
    return sock


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started, received = time.monotonic(), b""
    while chunk := sock.recv(65536):  # socket.timeout (a failure) if the server never closes
        received += chunk
    return received, time.monotonic() - started


@pytest.mark.parametrize("sent", [
    pytest.param(b"", id="nothing"),
    pytest.param(b"POST /v1/events HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n", id="half a head"),
    pytest.param(b"POST /v1/events HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
                 b"\r\n{\"project\": ", id="half a body"),
    pytest.param(b"POST /v1/traces HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nAuthorization: Bearer "
                 b"{secret}\r\nContent-Length: 100\r\n\r\n{", id="half a body on a Starlette route"),
])
def test_a_request_that_does_not_arrive_in_time_is_answered_408_and_closed(gateway, sent):
    with connect(gateway) as sock:
        sock.sendall(sent.replace(b"{secret}", gateway.secret.encode()))
        received, took = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert b"urn:backchannel:problem:request_timeout" in received
    assert 0.9 <= took < 5.0  # the bound is 1 s, from when a sweep (every 0.25 s) first saw the request waiting


def test_a_body_trickling_in_is_closed_although_each_byte_is_on_time(gateway):
    with connect(gateway) as sock:
        sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n")
        started = time.monotonic()
        try:
            while time.monotonic() - started < WAIT:  # a byte every 0.1 s: 1000 of them would take 100 s
                sock.sendall(b" ")
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received, _ = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert time.monotonic() - started < 5.0


def test_a_request_in_time_is_served_and_then_idles_out(gateway):
    with connect(gateway) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        received, took = read_until_closed(sock)  # keep-alive: closed by BACKCHANNEL_TIMEOUT_KEEP_ALIVE (1 s)
    assert received.startswith(b"HTTP/1.1 200 "), received
    assert received.count(b"HTTP/1.1") == 1


def test_the_open_files_soft_limit_is_raised_to_the_hard_limit(gateway):
    limits = Path(f"/proc/{gateway.proc.pid}/limits").read_text()
    line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    assert soft == hard, line


def test_limit_concurrency_answers_503_past_it(tmp_path):
    gw = GatewayProcess(tmp_path / "bc.db", env={"BACKCHANNEL_LIMIT_CONCURRENCY": "3"})
    gw.start()
    try:
        held = [connect(gw) for _ in range(3)]  # three open connections: the limit
        wait_for(lambda: _answer(gw).startswith(b"HTTP/1.1 503 "), timeout=WAIT, what="a 503 past the limit")
        for sock in held:
            sock.close()
        wait_for(lambda: _answer(gw).startswith(b"HTTP/1.1 200 "), timeout=WAIT, what="a 200 under the limit")
    finally:
        gw.stop()


def _answer(gw: GatewayProcess) -> bytes:
    with connect(gw) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        return read_until_closed(sock)[0]
