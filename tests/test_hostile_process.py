"""No request of any shape from an unauthenticated client produces a 5xx or a traceback: a range of hostile requests
at every route of a real gateway process (the routes read from the app, so a new one is covered when it is added)."""

from __future__ import annotations

import gzip
import re
import socket
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from starlette.routing import BaseRoute, Mount, Route

from gateway.app import create_app
from gateway.settings import Settings
from tests.servers import GatewayProcess
from tests.test_faults import create_project

LONGEST_LOG_LINE = 2000
HOSTILE_VALUES = ["x", "%00", "..%2F..%2Fetc%2Fpasswd", "%ff%fe", "é" * 3, "9" * 400, "-1", "pk_" + "A" * 5000,
                  "%E2%80%AE", "%0d%0aX-Injected: 1"]
DEEP = b"[" * 5000 + b"]" * 5000


def routes(entries: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, set[str]]]:
    """(path template, methods) of every route of the app, mounts included."""
    for entry in entries:
        if isinstance(entry, Mount):
            yield from routes(entry.routes, prefix + entry.path)
        elif isinstance(entry, Route):
            yield prefix + entry.path, set(entry.methods or {"GET"})


def concrete(template: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, template)


def bodies() -> Iterator[tuple[dict[str, str], bytes]]:
    json_ = {"Content-Type": "application/json"}
    yield json_, DEEP
    yield json_, b"\xff\xfe\x00garbage"
    yield json_, b'{"project": "pk_x", "events": [{"id": ' + b"1" * 5000 + b"}]}"
    yield json_, b'{"a": 1e999999, "b": -0, "c": 123456789012345678901234567890}'
    yield {**json_, "Content-Encoding": "gzip"}, b"\x1f\x8b\x08\x00garbage"
    yield {**json_, "Content-Encoding": "gzip"}, gzip.compress(b"{" * 200_000)
    yield {**json_, "Content-Encoding": "br, gzip, deflate"}, b"{}"
    yield {"Content-Type": "application/json; charset=utf-16"}, "{}".encode("utf-16")
    yield {"Content-Type": "application/x-www-form-urlencoded"}, b"key=" + b"%ff" * 1000 + b"&key=1&&==&%"
    yield {"Content-Type": "multipart/form-data; boundary=x"}, b"--x\r\nContent-Disposition: form-data\r\n\r\n"
    yield {"Content-Type": "text/plain"}, b"\x00" * 70_000
    yield {"Content-Type": "\u00e9/\u00e9; ;; charset=".encode()}, b"{}"


HEADERS = [
    {},
    {"Authorization": "Bearer " + "A" * 10_000},
    {"Authorization": "Bearer sk_\u00e9\u00e9".encode()},
    {"Authorization": "Basic !!!"},
    {"Authorization": "Bearer bc1." + "A" * 300 + "." + "B" * 43},
    {"Origin": "null", "Cookie": "bc_dashboard=" + "A" * 500 + "." + "B" * 43},
    {"Cookie": "bc_dashboard=a.b; bc_review=%ff%fe; =; ;;"},
    {"X-Forwarded-For": ", ".join(["not-an-ip"] * 200)},
    {"Range": "bytes=99999999-0", "If-None-Match": "*" * 1000, "Accept-Encoding": "br;q=nan, gzip;q=-1"},
    {"Accept": "text/html", "Accept-Language": ("\u00e9" * 100).encode()},
]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    db = tmp_path_factory.mktemp("hostile") / "bc.db"
    create_project(str(db))
    gw = GatewayProcess(db, env={"BACKCHANNEL_METRICS_TOKEN": "metrics-token-hostile-0123456789"})
    gw.start()
    yield gw
    gw.stop()


def all_routes() -> list[tuple[str, set[str]]]:
    app = create_app(Settings.load(environ={}, db=":memory:"))
    return sorted(set((path, frozenset(methods)) for path, methods in routes(app.routes)))  # type: ignore[misc]


def test_hostile_requests_at_every_route_never_answer_5xx_nor_log_a_traceback(gateway):
    failures = []
    seen = 0
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        for template, methods in all_routes():
            for value in HOSTILE_VALUES if "{" in template else [""]:
                path = concrete(template, value)
                for method in sorted(methods | {"PUT"}):  # PUT: a method no route takes
                    requests = [(headers, b"") for headers in HEADERS] if method in ("GET", "HEAD", "OPTIONS",
                                                                                     "DELETE") else []
                    if method in ("POST", "PUT"):
                        requests = [*((h, b) for h, b in bodies()), *((h, b"{}") for h in HEADERS[:6])]
                    for headers, body in requests:
                        seen += 1
                        try:
                            response = http.request(method, path, headers=headers, content=body or None)
                        except httpx.HTTPError as exc:  # a refused request may close early: never a 5xx
                            failures.append(f"{method} {path[:80]} {sorted(headers)}: {exc!r}")
                            continue
                        if response.status_code >= 500:
                            failures.append(f"{method} {path[:80]} {sorted(headers)}: {response.status_code} "
                                            f"{response.text[:200]}")
    log = Path(gateway.log.name).read_text()
    assert seen > 500
    assert not failures, "\n".join(failures[:30])
    assert "Traceback" not in log, log[-5000:]
    assert max(map(len, log.splitlines()), default=0) <= LONGEST_LOG_LINE


@pytest.mark.parametrize("raw", [
    b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GARBAGE\r\n\r\n",
    b"POST /v1/events HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /v1/events HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /v1/events HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    b"GET /v1/traces/t HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 100_000 + b"\r\n\r\n",
    b"GET /v1/traces/%zz HTTP/1.1\r\nHost: a\r\n\r\n",
])
def test_malformed_http_never_answers_5xx(gateway, raw):
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=15) as sock:
        sock.settimeout(15)
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, BrokenPipeError):
            received = b""
    assert not re.match(rb"HTTP/1\.[01] 5", received), received[:300]
    assert "Traceback" not in Path(gateway.log.name).read_text()
