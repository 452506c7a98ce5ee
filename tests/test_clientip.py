import pytest

from gateway.clientip import TrustedProxies, bucket_key, client_address, parse_address

LOCAL = "127.0.0.1"
PROXIES = "127.0.0.1, 10.0.0.0/8, 2001:db8:ffff::/48"


@pytest.mark.parametrize("peer, forwarded_for, trust, client", [
    # An untrusted peer is the client; its header is ignored, whatever it says.
    ("203.0.113.7", ["1.1.1.1"], LOCAL, "203.0.113.7"),
    ("203.0.113.7", ["1.1.1.1, 10.0.0.1"], PROXIES, "203.0.113.7"),
    ("203.0.113.7", [], LOCAL, "203.0.113.7"),
    # A trusted peer: the rightmost address not in the list. What the client wrote is left of it.
    (LOCAL, ["198.51.100.9"], LOCAL, "198.51.100.9"),
    (LOCAL, ["6.6.6.6, 198.51.100.9"], LOCAL, "198.51.100.9"),  # a spoofed leftmost entry is never read
    (LOCAL, ["6.6.6.6, 198.51.100.9, 10.1.2.3"], PROXIES, "198.51.100.9"),  # through two trusted proxies
    (LOCAL, ["6.6.6.6", "198.51.100.9, 10.1.2.3"], PROXIES, "198.51.100.9"),  # several header lines, in order
    (LOCAL, ["6.6.6.6", "198.51.100.9", "10.1.2.3"], PROXIES, "198.51.100.9"),
    ("10.9.9.9", ["198.51.100.9"], PROXIES, "198.51.100.9"),  # a peer inside a trusted CIDR
    (LOCAL, [], LOCAL, LOCAL),  # no header: the peer
    (LOCAL, ["10.0.0.2, 10.0.0.1"], PROXIES, "10.0.0.2"),  # every hop trusted: the leftmost
    # Ports and IPv6 forms are read; IPv4-mapped IPv6 is IPv4.
    (LOCAL, ["198.51.100.9:51234"], LOCAL, "198.51.100.9"),
    (LOCAL, ["[2001:db8::7]:443"], LOCAL, "2001:db8::7"),
    (LOCAL, ["2001:DB8:0:0::7"], LOCAL, "2001:db8::7"),
    (LOCAL, ["::ffff:198.51.100.9"], LOCAL, "198.51.100.9"),
    ("::ffff:127.0.0.1", ["198.51.100.9"], LOCAL, "198.51.100.9"),  # a mapped peer matches the IPv4 entry
    ("::1", ["198.51.100.9"], LOCAL, "::1"),  # ::1 is not 127.0.0.1: untrusted unless listed
    ("2001:db8:ffff:1::5", ["198.51.100.9"], PROXIES, "198.51.100.9"),
    # A malformed entry ends the walk: the client is the hop that reported it.
    (LOCAL, ["garbage"], LOCAL, LOCAL),
    (LOCAL, [""], LOCAL, LOCAL),
    (LOCAL, ["unknown"], LOCAL, LOCAL),
    (LOCAL, ["198.51.100.9, , 10.1.2.3"], PROXIES, "10.1.2.3"),
    (LOCAL, ["198.51.100.9, 10.1.2.3:x"], PROXIES, LOCAL),
    (LOCAL, ["6.6.6.6, rotate-me-1, 10.1.2.3"], PROXIES, "10.1.2.3"),
    (LOCAL, ["1.2.3.4.5"], LOCAL, LOCAL),
    (LOCAL, ["[2001:db8::7"], LOCAL, LOCAL),
    (LOCAL, ["1" * 5000], LOCAL, LOCAL),
    # `*` trusts every hop: the leftmost well-formed address (only safe where every path in is a proxy).
    ("203.0.113.7", ["6.6.6.6, 198.51.100.9"], "*", "6.6.6.6"),
    ("203.0.113.7", ["x, 198.51.100.9"], "*", "198.51.100.9"),
    # A peer that is no IP address (a Unix socket, a test client) is the client unless everything is trusted.
    (None, ["198.51.100.9"], LOCAL, "unknown"),
    ("testclient", ["198.51.100.9"], LOCAL, "testclient"),
    (None, ["198.51.100.9"], "*", "198.51.100.9"),
    # An empty trust list trusts no one.
    (LOCAL, ["198.51.100.9"], "", LOCAL),
])
def test_client_address(peer, forwarded_for, trust, client):
    assert client_address(peer, forwarded_for, TrustedProxies(trust)) == client


def test_rotating_a_spoofed_header_never_changes_the_client():
    trusted = TrustedProxies(LOCAL)
    seen = {client_address(LOCAL, [f"10.{i // 256}.{i % 256}.1, junk{i}, 198.51.100.9"], trusted)
            for i in range(1000)}
    assert seen == {"198.51.100.9"}
    seen = {client_address("203.0.113.7", [f"10.{i // 256}.{i % 256}.1"], trusted) for i in range(1000)}
    assert seen == {"203.0.113.7"}


@pytest.mark.parametrize("address, bucket", [
    ("198.51.100.9", "198.51.100.9"),
    ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("::ffff:198.51.100.9", "198.51.100.9"),
    ("fe80::1%eth0", "fe80::/64"),
    ("unknown", "unknown"),
    ("testclient", "testclient"),
])
def test_bucket_key(address, bucket):
    assert bucket_key(address) == bucket


def test_an_ipv6_slash_64_is_one_bucket_and_ipv4_addresses_are_not():
    assert len({bucket_key(f"2001:db8:1:2:{i:x}::{i:x}") for i in range(1, 5000)}) == 1
    assert len({bucket_key(f"198.51.{i // 256}.{i % 256}") for i in range(5000)}) == 5000


@pytest.mark.parametrize("entry, parsed", [
    ("1.2.3.4", "1.2.3.4"), (" 1.2.3.4 ", "1.2.3.4"), ("1.2.3.4:80", "1.2.3.4"), ("[::1]:80", "::1"), ("[::1]", "::1"),
    ("::1", "::1"), ("1.2.3.4:", None), ("[::1]x", None), ("host.example", None), ("", None), ("01.2.3.4", None),
])
def test_parse_address(entry, parsed):
    result = parse_address(entry)
    assert (str(result) if result is not None else None) == parsed


@pytest.mark.parametrize("spec", ["10.0.0.0/33", "not-an-ip", "127.0.0.1, nope"])
def test_a_malformed_trust_list_is_refused(spec):
    with pytest.raises(ValueError, match="not an IP address or CIDR network"):
        TrustedProxies(spec)


def test_trust_list_forms():
    trusted = TrustedProxies(" 127.0.0.1 ,10.0.0.0/8,::ffff:192.0.2.0/120 ")
    assert parse_address("10.200.0.1") in trusted and parse_address("192.0.2.77") in trusted
    assert parse_address("11.0.0.1") not in trusted
    assert parse_address("203.0.113.1") in TrustedProxies("*")
