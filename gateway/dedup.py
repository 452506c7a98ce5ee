"""De-duplication: each event id is stored once per project, however often and however it is sent.

A request meets it four times, in this order:

1. **In the batch** (`repeats`): an id repeated within one request answers `duplicate` after its first.
2. **The fast path** (`keys`, then `known`): with Redis, ids committed before answer `duplicate` without a trip to the
   store. The look-up rides in the limiter's round trip (`Limiter.check(limits, lookup=keys)`: one Lua script checks the
   rates and which keys exist), so this module builds the keys and reads the answer, and the limiter runs the script.
   Without Redis, or while it is down, there is no fast path (`keys` answers none).
3. **The store's verdict**: the unique (project, id) constraint is the truth; `Store.write_events` answers each row
   `"accepted"`, `"duplicate"` or a per-event error.
4. **Remember after commit** (`remember`): the ids the store holds (accepted or duplicate) are marked in Redis, in
   batches off the request's critical path, and only after their commit, or a lost event would look like a duplicate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence

from gateway.ratelimit import Limiter
from gateway.store import EventRow, Project

KEY_PREFIX = "seen:"
STORED = ("accepted", "duplicate")
"""The store's outcomes that mean the id is committed."""


class Dedup:
    """The four steps above; the fast path looks up through `limiter` and remembers committed ids for `ttl` seconds."""

    def __init__(self, limiter: Limiter, *, ttl: int) -> None:
        self._limiter = limiter
        self._fast = limiter.keeps_keys
        self._ttl = ttl
        self._to_remember: list[str] = []
        self._remembering: asyncio.Task | None = None

    @staticmethod
    def repeats(rows: Sequence[EventRow]) -> list[int]:
        """Indexes of the rows whose id came earlier in `rows` (usually none, found with one set)."""
        if len(rows) < 2:
            return []
        ids = {row.id.int for row in rows}  # a UUID's int: hashing a uuid.UUID runs Python code, its int does not
        if len(ids) == len(rows):
            return []
        seen: set[int] = set()
        found = []
        for i, row in enumerate(rows):
            if row.id.int in seen:
                found.append(i)
            seen.add(row.id.int)
        return found

    def keys(self, project: Project, rows: Sequence[EventRow]) -> list[str]:
        """The fast-path keys of `rows`, one each, for `Limiter.check(..., lookup=keys)`; none without a fast path."""
        if not self._fast:
            return []
        prefix = KEY_PREFIX + project.key_prefix
        return [prefix + str(row.id) for row in rows]

    @staticmethod
    def known(keys: Sequence[str], seen: Collection[str]) -> list[int]:
        """Indexes of the `keys` that the fast path answered (`Check.seen`) as committed."""
        return [i for i, key in enumerate(keys) if key in seen] if seen else []

    def remember(self, keys: Sequence[str], outcomes: Sequence[str]) -> None:
        """Mark the keys whose row the store committed (its `outcomes`, in order), in the background, in batches."""
        if not keys:
            return
        self._to_remember += [key for key, outcome in zip(keys, outcomes) if outcome in STORED]
        if self._to_remember and (self._remembering is None or self._remembering.done()):
            self._remembering = asyncio.create_task(self._remember())

    async def _remember(self) -> None:
        await asyncio.sleep(0)  # let the other requests answered by the same commit add theirs
        while self._to_remember:
            keys, self._to_remember = self._to_remember, []
            await self._limiter.mark(keys, self._ttl)

    async def aclose(self) -> None:
        if self._remembering is not None:
            await asyncio.gather(self._remembering, return_exceptions=True)
