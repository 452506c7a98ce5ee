"""Page sessions: a stateless cookie signed with HMAC-SHA256, naming who signed in and until when.

The cookie carries the credential's kind (`secret` or `reviewer`), its project id, its key id and an expiry — never the
key itself. Verifying checks the signature (constant time), the expiry, the kind the page accepts, and then asks
`is_live` whether the key still works, so revoking a key signs its cookies out. The server key that signs is the
gateway's (kept in the store); cookies signed with another key, edited, or cut short are simply not sessions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Literal

from starlette.responses import Response

Kind = Literal["secret", "reviewer"]
KINDS: tuple[Kind, ...] = ("secret", "reviewer")
DEFAULT_TTL = 12 * 3600
_CONTEXT = b"backchannel page session v1\x00"  # a MAC made for anything else never verifies here
_MAX_COOKIE = 512


@dataclass(frozen=True)
class Principal:
    """Who a session is: the kind of key signed in with, its project and the key's id."""

    kind: Kind
    project_id: int
    key_id: str


class Sessions:
    """Issues and verifies the session cookie of one page (`name` at `path`, e.g. `bc_dashboard` at `/dashboard`)."""

    def __init__(self, key: bytes, *, is_live: Callable[[Principal], Awaitable[bool]], name: str, path: str,
                 ttl: int = DEFAULT_TTL, clock: Callable[[], float] = time.time) -> None:
        if len(key) < 16:
            raise ValueError("the session key needs at least 16 bytes")
        self._key = key
        self._is_live = is_live
        self.name = name
        self.path = path
        self.ttl = ttl
        self._clock = clock

    def issue(self, principal: Principal) -> str:
        """The cookie value for `principal`, valid for `ttl` seconds from now."""
        payload = json.dumps({"k": principal.kind, "p": principal.project_id, "i": principal.key_id,
                              "e": int(self._clock()) + self.ttl}, separators=(",", ":")).encode()
        body = _b64(payload)
        return f"{body}.{_b64(self._mac(body))}"

    async def verify(self, value: str | None, kinds: Collection[Kind] = KINDS) -> Principal | None:
        """The principal of a cookie value that is intact, unexpired, of an accepted kind and whose key is live."""
        principal = self.read(value, kinds)
        if principal is None or not await self._is_live(principal):
            return None
        return principal

    def read(self, value: str | None, kinds: Collection[Kind] = KINDS) -> Principal | None:
        """`verify` without asking whether the key is still live."""
        if not value or len(value) > _MAX_COOKIE or value.count(".") != 1:
            return None
        body, _, mac = value.partition(".")
        try:
            given = _unb64(mac)
            if not hmac.compare_digest(given, self._mac(body)):
                return None
            claims = json.loads(_unb64(body))
        except ValueError:  # bad base64, bad UTF-8 or bad JSON (all ValueError subclasses)
            return None
        if not isinstance(claims, dict):
            return None
        kind, project_id, key_id, expires = claims.get("k"), claims.get("p"), claims.get("i"), claims.get("e")
        if (kind not in kinds or type(project_id) is not int or not isinstance(key_id, str)
                or type(expires) is not int or expires <= self._clock()):
            return None
        return Principal(kind, project_id, key_id)

    def set_cookie(self, response: Response, principal: Principal, *, secure: bool) -> None:
        response.set_cookie(self.name, self.issue(principal), max_age=self.ttl, path=self.path, secure=secure,
                            httponly=True, samesite="strict")

    def clear_cookie(self, response: Response, *, secure: bool) -> None:
        response.delete_cookie(self.name, path=self.path, secure=secure, httponly=True, samesite="strict")

    def _mac(self, body: str) -> bytes:
        return hmac.new(self._key, _CONTEXT + body.encode("ascii", "replace"), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Exactly unpadded base64url, as tokens (`gateway/tokens.py`): padding, `+/`, stray characters and non-zero
    trailing bits would each be another spelling of one cookie, so what does not re-encode to itself is refused."""
    data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_")
    if _b64(data) != text:
        raise ValueError("not unpadded base64url")
    return data
