"""The client's rate-limit bucket through the real `/v1/events` route: `X-Forwarded-For` speaks only through trusted
proxies (BACKCHANNEL_FORWARDED_ALLOW_IPS), and an IPv6 client is limited per /64."""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from typing import AsyncIterator

import httpx
import pytest

from tests.conftest import ORIGIN, Harness, running_gateway
from tests.events import event

LIMIT_IP = "1/h burst 100"  # a client's bucket holds 100 events, and refills far slower than a test runs
sessions = itertools.count()


@contextlib.asynccontextmanager
async def gateway(tmp_path, **settings) -> AsyncIterator[Harness]:
    async with running_gateway(str(tmp_path / "bc.db"), require_token=False, limit_ip=LIMIT_IP, **settings) as h:
        await h.trace()
        yield h


async def post(h: Harness, peer: str, events: int, forwarded_for: list[str] = ()) -> httpx.Response:
    """`events` tokenless events, each of a session of its own (so no session bucket fills), from `peer`."""
    transport = httpx.ASGITransport(app=h.app, client=(peer, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        return await client.post(
            "/v1/events", json={"project": h.public_key,
                                "events": [event(session_id=f"s{next(sessions)}") for _ in range(events)]},
            headers=[("Origin", ORIGIN), *(("X-Forwarded-For", value) for value in forwarded_for)])


def ip_hashes(h: Harness) -> set[str]:
    with sqlite3.connect(h.db) as conn:
        return {row[0] for row in conn.execute("SELECT ip_hash FROM events")}


async def test_a_spoofed_forwarded_for_from_an_untrusted_peer_does_not_change_the_bucket(tmp_path):
    async with gateway(tmp_path) as h:  # the default trust list: 127.0.0.1 only
        assert (await post(h, "203.0.113.7", 100, ["198.51.100.1"])).status_code == 200
        for spoof in (["198.51.100.2"], ["10.0.0.1, 198.51.100.3"], ["198.51.100.4", "198.51.100.5"], []):
            response = await post(h, "203.0.113.7", 1, spoof)
            assert response.status_code == 429, (spoof, response.text)
        assert (await post(h, "203.0.113.8", 1, ["198.51.100.1"])).status_code == 200  # another peer: its own
        assert len(ip_hashes(h)) == 2


async def test_behind_a_trusted_proxy_the_client_is_the_rightmost_untrusted_address(tmp_path):
    async with gateway(tmp_path, forwarded_allow_ips="127.0.0.1, 10.0.0.0/8") as h:
        # The proxy at 10.1.2.3 appended the client 198.51.100.1; whatever the client wrote left of it is ignored.
        assert (await post(h, "127.0.0.1", 100, ["6.6.6.6, 198.51.100.1, 10.1.2.3"])).status_code == 200
        for spoof in ("7.7.7.7", "8.8.8.8, 9.9.9.9"):
            response = await post(h, "127.0.0.1", 1, [f"{spoof}, 198.51.100.1, 10.1.2.3"])
            assert response.status_code == 429, response.text
        assert (await post(h, "127.0.0.1", 100, ["198.51.100.2"])).status_code == 200  # another client
        assert len(ip_hashes(h)) == 2


@pytest.mark.parametrize("first, same, other", [
    ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe", "2001:db8:1:3::1"),
    ("203.0.113.9", "::ffff:203.0.113.9", "203.0.113.10"),  # IPv4-mapped IPv6 is the IPv4 address
])
async def test_an_ipv6_slash_64_is_one_bucket_and_an_ipv4_address_is_one(tmp_path, first, same, other):
    async with gateway(tmp_path) as h:
        assert (await post(h, first, 100)).status_code == 200
        assert (await post(h, same, 1)).status_code == 429
        assert (await post(h, other, 1)).status_code == 200


def test_uvicorn_does_not_rewrite_the_client_address_itself():
    # uvicorn's own proxy-header handling (FORWARDED_ALLOW_IPS, 127.0.0.1 by default) would replace the peer with the
    # leftmost-trusted-walk of its own list before the gateway sees it: it is off, so there is one trust list.
    from gateway.server import uvicorn_config

    config = uvicorn_config(object(), host="127.0.0.1", port=0)
    assert config.proxy_headers is False
