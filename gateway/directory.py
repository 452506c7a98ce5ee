"""Who is calling: projects by public key, secret keys by hash, token keys by id — cached, because every request asks.

Entries live for `ttl` seconds so a project created or changed by the CLI (another process) is seen soon; unknown keys
are remembered briefly too, so a flood of bad keys does not become a flood of database reads.
"""

from __future__ import annotations

import enum
import time
from typing import Awaitable, Callable, Generic, TypeVar

from starlette.requests import Request

from gateway.errors import HTTPProblem
from gateway.store import Project, SecretKey, Store

class Miss(enum.Enum):
    MISS = "MISS"


MISS = Miss.MISS
"""What the synchronous look-ups (`peek`, `cached_*`) answer when they would have to read the store."""

K = TypeVar("K")
V = TypeVar("V")


class _Cache(Generic[K, V]):
    def __init__(self, load: Callable[[K], Awaitable[V | None]], ttl: float, negative_ttl: float,
                 max_entries: int = 10_000) -> None:
        self._load = load
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max = max_entries
        self._entries: dict[K, tuple[float, V | None]] = {}

    def peek(self, key: K) -> V | None | Miss:
        """The cached value (None: known not to exist), or MISS when it has to be loaded: `get` does that."""
        hit = self._entries.get(key)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else MISS

    async def get(self, key: K) -> V | None:
        value = self.peek(key)
        if value is not MISS:
            return value
        now = time.monotonic()
        value = await self._load(key)
        if len(self._entries) >= self._max:
            self._entries.clear()  # crude but bounded; a refill costs one read per live key
        self._entries[key] = (now + (self._ttl if value is not None else self._negative_ttl), value)
        return value


class Directory:
    def __init__(self, store: Store, ttl: float = 30.0, key_ttl: float = 5.0, negative_ttl: float = 5.0) -> None:
        self._projects = _Cache(store.project_by_public_key, ttl, negative_ttl)
        self._projects_by_id = _Cache(store.project_by_id, ttl, negative_ttl)
        # Keys are re-read sooner, so a revoked key (and every token minted with it) stops working within seconds.
        self._secrets = _Cache(store.key_by_secret, key_ttl, negative_ttl)
        self._kids = _Cache(store.key_by_kid, key_ttl, negative_ttl)

    async def project(self, public_key: str) -> Project | None:
        if not public_key.startswith("pk_"):
            return None
        return await self._projects.get(public_key)

    def cached_project(self, public_key: str) -> Project | None | Miss:
        """`project` without a coroutine when the answer is cached (the hot path asks on every request)."""
        return self._projects.peek(public_key) if public_key.startswith("pk_") else None

    async def token_key(self, project: Project, kid: str) -> bytes | None:
        return _live_token_key(await self._kids.get(kid), project)

    def cached_token_key(self, project: Project, kid: str) -> bytes | None | Miss:
        key = self._kids.peek(kid)
        return key if key is MISS else _live_token_key(key, project)

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
