"""Feedback tokens: `bc1.<payload>.<sig>`, HMAC-SHA256 under a key derived from the project's secret key.

payload = base64url(JSON {"p": public_key, "t": trace_id, "s": session_id, "e": expiry (unix s), "k": key id}).
The gateway stores only `token_key` (derived, one-way) and a hash of the secret, never the secret itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import msgspec

PREFIX = "bc1."
_KDF_LABEL = b"backchannel-token-v1"


class Claims(msgspec.Struct):
    p: str  # project public key
    t: str  # trace id
    s: str  # session id
    e: int  # expiry, unix seconds
    k: str  # key id


class InvalidToken(Exception):
    pass


_decode_claims = msgspec.json.Decoder(Claims).decode
_encode = msgspec.json.Encoder().encode


def key_id(secret_key: str) -> str:
    return hashlib.sha256(secret_key.encode()).hexdigest()[:12]


def secret_hash(secret_key: str) -> str:
    return hashlib.sha256(secret_key.encode()).hexdigest()


def token_key(secret_key: str) -> bytes:
    return hmac.new(secret_key.encode(), _KDF_LABEL, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Exactly unpadded base64url. The decoder alone also takes padding, `+/`, stray characters and non-zero trailing
    bits: each would be another spelling of one token (another cache key), so what does not re-encode to itself is
    refused."""
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not unpadded base64url")
    return data


def mint(secret_key: str, *, public_key: str, trace_id: str, session_id: str, ttl: int,
         now: float | None = None) -> tuple[str, int]:
    """A token for (project, trace, session); returns it with its expiry (unix seconds)."""
    expiry = int(now if now is not None else time.time()) + ttl
    claims = Claims(p=public_key, t=trace_id, s=session_id, e=expiry, k=key_id(secret_key))
    signed = PREFIX + _b64(_encode(claims))
    sig = hmac.new(token_key(secret_key), signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{_b64(sig)}", expiry


class Parsed(msgspec.Struct):
    claims: Claims
    signed: str
    sig: bytes


def parse(token: str) -> Parsed:
    """Split and decode a token. Its claims are NOT trusted until `verify` checked the signature."""
    if not token.startswith(PREFIX) or token.count(".") != 2:
        raise InvalidToken("not a bc1 token")
    signed, _, sig = token.rpartition(".")
    try:
        return Parsed(_decode_claims(_unb64(signed[len(PREFIX):])), signed, _unb64(sig))
    except (ValueError, msgspec.DecodeError):
        raise InvalidToken("undecodable token") from None


def verify(parsed: Parsed, key: bytes | None, *, public_key: str, trace_id: str, now: float | None = None) -> Claims:
    """The claims of a genuine, unexpired token minted for this project and trace.

    `key` is the token key of the project's secret key whose id the token names (None if there is no such key).
    """
    check_signature(parsed, key)
    if not binds(parsed.claims, public_key, trace_id, now if now is not None else time.time()):
        raise InvalidToken("token minted for another project or trace, or expired")
    return parsed.claims


def check_signature(parsed: Parsed, key: bytes | None) -> None:
    """Raise InvalidToken unless `key` (None: no such key) signed this token. Constant-time comparison."""
    if key is None:
        raise InvalidToken("unknown key id")
    if not hmac.compare_digest(hmac.digest(key, parsed.signed.encode(), "sha256"), parsed.sig):
        raise InvalidToken("bad signature")


def binds(claims: Claims, public_key: str, trace_id: str, now: float) -> bool:
    """Whether genuine claims are for this project and trace, and unexpired at `now`."""
    return claims.p == public_key and claims.t == trace_id and claims.e >= now


class Verifier:
    """Checks token signatures, each token once, not once per event it rides on.

    Plain values in and out: the caller looks the key up (`key_id`, then the live token key of that id) and hands it to
    `claims`. A remembered token is still refused once its key is revoked (no live key: None); what it binds (project,
    trace, expiry) is for the caller to check on every use, with `binds`.
    """

    def __init__(self, max_entries: int = 50_000) -> None:
        self._verified: dict[str, Claims] = {}
        self._max = max_entries

    def key_id(self, token: str) -> str:
        """The id of the key a token says it was signed with (not checked yet), or InvalidToken if it is no token."""
        claims = self._verified.get(token)
        return claims.k if claims is not None else parse(token).claims.k

    def claims(self, token: str, key: bytes | None) -> Claims:
        """The claims of a token signed by `key`, the live token key of the id it names (None: no live key), or
        InvalidToken."""
        if key is None:
            raise InvalidToken("no live key has this id")
        claims = self._verified.get(token)
        if claims is not None:  # signed by this key id, checked before; a key id names one key forever
            return claims
        parsed = parse(token)
        check_signature(parsed, key)
        if len(self._verified) >= self._max:
            self._verified.clear()
        self._verified[token] = parsed.claims
        return parsed.claims
