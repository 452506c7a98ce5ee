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
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


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
    if key is None:
        raise InvalidToken("unknown key id")
    expected = hmac.new(key, parsed.signed.encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, parsed.sig):
        raise InvalidToken("bad signature")
    claims = parsed.claims
    if claims.p != public_key or claims.t != trace_id:
        raise InvalidToken("token minted for another project or trace")
    if claims.e < (now if now is not None else time.time()):
        raise InvalidToken("token expired")
    return claims
