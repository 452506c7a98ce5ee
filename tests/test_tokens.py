from __future__ import annotations

import pytest

from gateway import tokens

SECRET = "sk_test_secret"


def mint(**overrides):
    args = dict(public_key="pk_a", trace_id="t1", session_id="s1", ttl=60, now=1_000_000)
    args.update(overrides)
    return tokens.mint(SECRET, **args)


def check(token: str, **overrides):
    args = dict(public_key="pk_a", trace_id="t1", now=1_000_010)
    args.update(overrides)
    parsed = tokens.parse(token)
    key = tokens.token_key(SECRET) if parsed.claims.k == tokens.key_id(SECRET) else None
    return tokens.verify(parsed, key, **args)


def test_round_trip_binds_project_trace_session_expiry_and_key_id():
    token, expiry = mint()
    assert token.startswith("bc1.") and token.count(".") == 2
    assert expiry == 1_000_060
    claims = check(token)
    assert (claims.p, claims.t, claims.s, claims.e, claims.k) == ("pk_a", "t1", "s1", 1_000_060, tokens.key_id(SECRET))


@pytest.mark.parametrize("overrides", [{"public_key": "pk_b"}, {"trace_id": "t2"}, {"now": 1_000_061}])
def test_refused_for_another_project_trace_or_after_expiry(overrides):
    token, _ = mint()
    with pytest.raises(tokens.InvalidToken):
        check(token, **overrides)


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # signature
    lambda t: t.replace("bc1.", "bc2."),
    lambda t: "bc1." + t.split(".")[1][::-1] + "." + t.split(".")[2],  # payload
    lambda t: t + ".extra",
    lambda t: "",
])
def test_tampered_tokens_are_refused(mangle):
    token, _ = mint()
    with pytest.raises(tokens.InvalidToken):
        check(mangle(token))


def test_token_of_another_secret_is_refused():
    token, _ = tokens.mint("sk_other", public_key="pk_a", trace_id="t1", session_id="s1", ttl=60, now=1_000_000)
    with pytest.raises(tokens.InvalidToken):
        check(token)


def test_secret_is_not_recoverable_from_what_is_stored():
    stored = tokens.secret_hash(SECRET) + tokens.token_key(SECRET).hex()
    assert SECRET not in stored and SECRET.encode().hex() not in stored


def test_verifier_checks_each_signature_once_and_still_refuses_revoked_keys(monkeypatch):
    verifier = tokens.Verifier()
    token, _ = tokens.mint(SECRET, public_key="pk_a", trace_id="t1", session_id="s1", ttl=60)
    kid, key = tokens.key_id(SECRET), tokens.token_key(SECRET)
    assert verifier.key_id(token) == kid
    checked = []
    real_check = tokens.check_signature
    monkeypatch.setattr(tokens, "check_signature", lambda parsed, k: checked.append(k) or real_check(parsed, k))
    assert verifier.claims(token, key).s == "s1"
    assert verifier.claims(token, key).s == "s1"
    assert checked == [key]  # once per token
    assert verifier.key_id(token) == kid  # from what was remembered
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    with pytest.raises(tokens.InvalidToken):
        verifier.claims(forged, key)
    with pytest.raises(tokens.InvalidToken):  # the key was revoked (no live key): its remembered tokens stop working
        verifier.claims(token, None)
    with pytest.raises(tokens.InvalidToken):
        verifier.key_id("garbage")


def test_binds_checks_project_trace_and_expiry():
    claims = tokens.Claims(p="pk_a", t="t1", s="s1", e=100, k="kid")
    assert tokens.binds(claims, "pk_a", "t1", 100)
    assert not tokens.binds(claims, "pk_b", "t1", 100)
    assert not tokens.binds(claims, "pk_a", "t2", 100)
    assert not tokens.binds(claims, "pk_a", "t1", 101)
