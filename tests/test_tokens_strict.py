"""A token has exactly one spelling: unpadded base64url in both parts, nothing else."""

from __future__ import annotations

import itertools

import pytest

from gateway import tokens

SECRET = "sk_test_secret"
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def genuine(need: str = "") -> str:
    """A genuine token whose signature contains one of the characters in `need` (if given)."""
    for i in itertools.count():
        token, _ = tokens.mint(SECRET, public_key="pk_a", trace_id=f"t{i}", session_id="s1", ttl=60, now=1_000_000)
        if not need or any(ch in token.rsplit(".", 1)[1] for ch in need):
            return token


def accepted(token: str) -> bool:
    try:
        tokens.verify(tokens.parse(token), tokens.token_key(SECRET), public_key="pk_a",
                      trace_id=tokens.parse(token).claims.t, now=1_000_010)
    except tokens.InvalidToken:
        return False
    return True


def respell_last(part: str) -> str:
    """The same bytes with non-zero trailing bits: a 32-byte signature is 43 characters, whose last 2 bits are 0."""
    index = ALPHABET.index(part[-1])
    return part[:-1] + ALPHABET[index | 1]


def with_sig(token: str, change) -> str:
    signed, _, sig = token.rpartition(".")
    return f"{signed}.{change(sig)}"


def with_payload(token: str, change) -> str:
    prefix, payload, sig = token.split(".")
    return f"{prefix}.{change(payload)}.{sig}"


SPELLINGS = {
    "sig padded =": lambda t: t + "=",
    "sig padded ==": lambda t: t + "==",
    # The lenient decoder skips characters outside the alphabet once the padding arithmetic works out.
    "sig with !!": lambda t: with_sig(t, lambda s: s[:10] + "!!" + s[10:]),
    "sig with !=": lambda t: with_sig(t, lambda s: s[:10] + "!=" + s[10:]),
    "sig with spaces": lambda t: with_sig(t, lambda s: s[:10] + "    " + s[10:]),
    "sig with newlines": lambda t: with_sig(t, lambda s: s + "\n\n\n\n"),
    "sig in +/ alphabet": lambda t: with_sig(t, lambda s: s.replace("-", "+").replace("_", "/")),
    "sig trailing bits": lambda t: with_sig(t, respell_last),
    "payload padded": lambda t: with_payload(t, lambda p: p + "=" * (-len(p) % 4 or 4)),
    "payload with !!!!": lambda t: with_payload(t, lambda p: p[:5] + "!!!!" + p[5:]),
}


@pytest.mark.parametrize("name", SPELLINGS)
def test_another_spelling_of_a_genuine_token_is_refused(name):
    token = genuine(need="-_" if "alphabet" in name else "")
    other = SPELLINGS[name](token)
    assert other != token and accepted(token)
    with pytest.raises(tokens.InvalidToken):
        tokens.parse(other)
    with pytest.raises(tokens.InvalidToken):
        tokens.Verifier().claims(other, tokens.token_key(SECRET))


def test_padding_that_still_decodes_the_same_is_refused():
    # The payload's padded spelling must decode to the same claims for this to test strictness, not corruption.
    token = genuine()
    payload = token.split(".")[1]
    assert len(payload) % 4, "this payload needs padding in standard base64"
    with pytest.raises(tokens.InvalidToken):
        tokens.parse(with_payload(token, lambda p: p + "=" * (-len(p) % 4)))


def test_every_genuine_token_still_parses():
    for i in range(200):
        token, _ = tokens.mint(SECRET, public_key="pk_a", trace_id=f"trace-{i}", session_id="s" * (i % 7 + 1), ttl=60,
                               now=1_000_000)
        assert accepted(token)
