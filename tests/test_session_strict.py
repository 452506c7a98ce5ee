"""A page session cookie has exactly one spelling, as a token has: unpadded base64url in both parts, nothing else."""

from __future__ import annotations

import itertools

import pytest

from gateway.pages.session import Principal, Sessions

KEY = b"a session key of 32 bytes, exact"
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


async def _live(principal: Principal) -> bool:
    return True


SESSIONS = Sessions(KEY, is_live=_live, name="bc_dashboard", path="/dashboard", clock=lambda: 1000.0)


def genuine(need: str = "") -> str:
    """A genuine cookie whose MAC contains one of the characters in `need` (if given)."""
    for i in itertools.count():
        value = SESSIONS.issue(Principal("secret", 7, f"kid_{i}"))
        if not need or any(ch in value.split(".")[1] for ch in need):
            return value


def respell_last(part: str) -> str:
    """The same bytes with non-zero trailing bits: a 32-byte MAC is 43 characters, whose last 2 bits are 0."""
    return part[:-1] + ALPHABET[ALPHABET.index(part[-1]) | 1]


def test_a_genuine_cookie_is_read():
    assert SESSIONS.read(genuine()) == Principal("secret", 7, "kid_0")


@pytest.mark.parametrize("respell", [
    pytest.param(lambda body, mac: (body, mac + "="), id="padding on the MAC"),
    pytest.param(lambda body, mac: (body + "=" * (-len(body) % 4 or 4), mac), id="padding on the body"),
    pytest.param(lambda body, mac: (body, mac.replace("-", "+").replace("_", "/")), id="standard alphabet"),
    pytest.param(lambda body, mac: (body, respell_last(mac)), id="non-zero trailing bits"),
    pytest.param(lambda body, mac: (body, mac[:5] + "!" + mac[5:]), id="a stray character"),
    pytest.param(lambda body, mac: (body, mac[:5] + " " + mac[5:]), id="a space"),
])
def test_any_other_spelling_of_a_cookie_is_not_a_session(respell):
    value = genuine("-_")
    body, mac = respell(*value.split("."))
    assert f"{body}.{mac}" != value
    assert SESSIONS.read(f"{body}.{mac}") is None
