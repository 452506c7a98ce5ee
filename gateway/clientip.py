"""The client's address behind trusted proxies, the rate-limit bucket it falls in, and that bucket's daily hash.

The rule is uvicorn's and gunicorn's `forwarded_allow_ips`: each proxy appends the address it received the request from
to `X-Forwarded-For`, so the entries are read right to left, and the client is the rightmost address that is not a
trusted proxy. Entries left of it were written by the client and are never read. A peer that is not a trusted proxy is
the client itself, whatever the header says.

A malformed entry (not an IP address, with or without a port) ends the walk: the client is then the hop that reported
it, the nearest address a trusted proxy vouches for. So no string a client writes can become its bucket.
"""

from __future__ import annotations

import hashlib
import ipaddress
from functools import lru_cache
from typing import Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
UNKNOWN = "unknown"  # no peer address at all (some test clients, a Unix socket)
IPV6_BUCKET_PREFIX = 64  # one host is usually given a whole /64


class TrustedProxies:
    """A parsed trust list: comma-separated IP addresses and CIDR networks, or `*` for every peer."""

    def __init__(self, spec: str) -> None:
        items = [item.strip() for item in spec.split(",") if item.strip()]
        self.all = "*" in items
        networks = []
        for item in items:
            if item == "*":
                continue
            try:
                network = ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"not an IP address or CIDR network: {item!r}") from None
            if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96 and (
                    mapped := network.network_address.ipv4_mapped) is not None:
                network = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
            networks.append(network)
        self.networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(networks)

    def __contains__(self, address: IPAddress) -> bool:
        return self.all or any(address in network for network in self.networks)


def parse_address(entry: str) -> IPAddress | None:
    """An IP address from a peer or `X-Forwarded-For` entry (`1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:80`),
    IPv4-mapped IPv6 as IPv4; None if it is none of these."""
    text = entry.strip()
    return _parse(text) if len(text) <= _LONGEST_ENTRY else None  # a long one is no address, and is not cached


_LONGEST_ENTRY = 64  # "[" + IPv6 with an IPv4 tail and a zone id + "]:65535" fits


@lru_cache(maxsize=8192)
def _parse(text: str) -> IPAddress | None:
    if text.startswith("["):
        host, bracket, port = text[1:].partition("]")
        if not bracket or (port and not (port[0] == ":" and port[1:].isdigit())):
            return None
        text = host
    elif text.count(":") == 1:
        text, _, port = text.partition(":")
        if not port.isdigit():
            return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: TrustedProxies) -> str:
    """The client's address as text: `peer` is the connection's remote address (ASGI `scope["client"][0]`),
    `forwarded_for` every `X-Forwarded-For` header value in the order received."""
    address = parse_address(peer) if peer else None
    if address is None:  # not an IP peer: only `*` lets its header speak
        if not trusted.all or not forwarded_for:
            return peer or UNKNOWN
        client = peer or UNKNOWN
    elif address not in trusted:
        return str(address)
    else:
        client = str(address)
    for value in reversed(forwarded_for):
        for entry in reversed(value.split(",")):
            hop = parse_address(entry)
            if hop is None:
                return client
            client = str(hop)
            if hop not in trusted:
                return client
    return client  # every hop is trusted: the leftmost


@lru_cache(maxsize=8192)
def bucket_key(address: str) -> str:
    """The rate-limit bucket of a client address: an IPv4 address is its own, an IPv6 address shares its /64;
    anything else (no address) is its own text."""
    ip = parse_address(address)
    if ip is None:
        return address
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    return str(ipaddress.IPv6Network((int(ip) >> (128 - IPV6_BUCKET_PREFIX) << (128 - IPV6_BUCKET_PREFIX),
                                      IPV6_BUCKET_PREFIX)))


@lru_cache(maxsize=8192)
def hash_ip(bucket: str, salt: str, day: int) -> str:
    """A client's bucket (`bucket_key`) hashed under the day's salt: enough to rate-limit and group, useless to find
    the person once the salt is deleted with its day (`gateway/store/salts.py`). Raw IPs are never stored."""
    return hashlib.sha256(f"{salt}:{day}:{bucket}".encode()).hexdigest()[:16]
