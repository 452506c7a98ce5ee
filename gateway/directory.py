"""Who is calling: projects by public key, secret keys by hash, token keys by id — cached, because every request asks.

Entries live for `ttl` seconds so a project created or changed by the CLI (another process) is seen soon; unknown keys
are remembered briefly too, so a flood of bad keys does not become a flood of database reads.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable
from typing import Awaitable, Callable, Generic, TypeVar

from starlette.requests import Request

from gateway import tokens
from gateway.errors import HTTPProblem
from gateway.store import Project, SecretKey, Store

K = TypeVar("K")
V = TypeVar("V")

class _Miss(enum.Enum):
    MISS = 0


_MISS = _Miss.MISS  # what `_Cache.peek` answers when the value has to be loaded


class _Cache(Generic[K, V]):
    def __init__(self, load: Callable[[K], Awaitable[V | None]], ttl: float, negative_ttl: float,
                 max_entries: int = 10_000) -> None:
        self._load = load
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max = max_entries
        self._entries: dict[K, tuple[float, V | None]] = {}

    def peek(self, key: K) -> V | None | _Miss:
        """The cached value (None: known not to exist), or `_MISS`. The hot path asks this before `get`: a
        cached answer then costs no coroutine."""
        hit = self._entries.get(key)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else _MISS

    async def get(self, key: K) -> V | None:
        value = self.peek(key)
        if value is not _MISS:
            return value
        now = time.monotonic()
        value = await self._load(key)
        if len(self._entries) >= self._max:
            self._entries.clear()  # crude but bounded; a refill costs one read per live key
        self._entries[key] = (now + (self._ttl if value is not None else self._negative_ttl), value)
        return value


class Directory:
    def __init__(self, store: Store, verifier: tokens.Verifier, ttl: float = 30.0, key_ttl: float = 5.0,
                 negative_ttl: float = 5.0) -> None:
        self._verifier = verifier
        self._projects = _Cache(store.project_by_public_key, ttl, negative_ttl)
        self._projects_by_id = _Cache(store.project_by_id, ttl, negative_ttl)
        # Keys are re-read sooner, so a revoked key (and every token minted with it) stops working within seconds.
        self._secrets = _Cache(store.key_by_secret, key_ttl, negative_ttl)
        self._kids = _Cache(store.key_by_kid, key_ttl, negative_ttl)

    async def project(self, public_key: str) -> Project | None:
        if not public_key.startswith("pk_"):
            return None
        return await self._projects.get(public_key)

    async def browser_auth(self, public_key: str, origin: str | None, events: Iterable[object]
                           ) -> tuple[Project, dict[str, tokens.Claims]]:
        """The project of a browser route's public key if `origin` may use it (else a 401 or 403), and the claims of
        each distinct genuine token that `events` carry (a widget sends one token for many events; an event without a
        `token` attribute, or whose token is not genuine, has none here)."""
        if public_key.startswith("sk_"):
            raise HTTPProblem("unknown_project", "secret keys never work on browser routes; send the public key (pk_...)")
        project = self._projects.peek(public_key) if public_key.startswith("pk_") else None
        if project is _MISS:
            project = await self._projects.get(public_key)
        if project is None:
            raise HTTPProblem("unknown_project", "no project has this public key")
        if not project.allows_origin(origin):
            raise HTTPProblem("origin_not_allowed", f"origin {origin!r} is not allowed for this project")
        claims: dict[str, tokens.Claims] = {}
        refused: set[str] = set()
        verifier = self._verifier
        for event in events:
            token = getattr(event, "token", None)
            if token is None or token in claims or token in refused:
                continue
            try:
                kid = verifier.key_id(token)
                key = self._kids.peek(kid)
                if key is _MISS:
                    key = await self._kids.get(kid)
                claims[token] = verifier.claims(token, _live_token_key(key, project))
            except tokens.InvalidToken:
                refused.add(token)
        return project, claims

    async def server_auth(self, request: Request) -> tuple[Project, str]:
        """The project and secret key of a server route's `Authorization: Bearer sk_...`, or a 401."""
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise HTTPProblem("unauthorized", "send the project's secret key as `Authorization: Bearer sk_...`",
                              {"WWW-Authenticate": "Bearer"})
        if not credential.startswith("sk_"):
            raise HTTPProblem("unauthorized", "server routes take a secret key (sk_...); public keys never work here",
                              {"WWW-Authenticate": "Bearer"})
        key: SecretKey | None = await self._secrets.get(credential)
        project = await self._projects_by_id.get(key.project_id) if key and not key.revoked else None
        if project is None:
            raise HTTPProblem("unauthorized", "unknown or revoked secret key", {"WWW-Authenticate": "Bearer"})
        return project, credential


def _live_token_key(key: SecretKey | None, project: Project) -> bytes | None:
    """The key's token key, if it is a live key of this project."""
    if key is None or key.revoked or key.project_id != project.id:
        return None
    return key.token_key
