"""The store: projects, keys, traces and the event log. One interface; SQLite (`sqlite.py`) is the embedded default."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import msgspec
from typing import Awaitable, Protocol, Sequence

from gateway.schemas import Reason, TraceIn, TraceOut


class StoreUnavailable(Exception):
    """The store could not commit; nothing of the failed transaction was stored."""


@dataclass(frozen=True)
class Project:
    id: int
    public_key: str
    name: str
    origins: tuple[str, ...]
    require_token: bool
    reasons: tuple[Reason, ...]
    delay_ms: int
    created_at: int

    @cached_property
    def key_prefix(self) -> str:
        """`"<id>:"`, which namespaces the project's rate-limit and de-dup keys."""
        return f"{self.id}:"

    @cached_property  # a frozen dataclass still has a __dict__, where cached_property keeps it
    def reason_codes(self) -> frozenset[str]:
        return frozenset(r.code for r in self.reasons)

    def allows_origin(self, origin: str | None) -> bool:
        return "*" in self.origins or (origin is not None and origin.rstrip("/") in self.origins)


@dataclass(frozen=True)
class SecretKey:
    kid: str
    project_id: int
    token_key: bytes
    revoked: bool


class EventRow(msgspec.Struct, array_like=True):  # array_like: smaller, faster frames to the writer
    """One validated event, ready to insert."""

    id: str  # the gateway sets the event's uuid.UUID, which msgpack carries as its canonical text
    trace_id: str
    session_id: str
    type: str
    value: int | None
    reason: str | None
    comment: str | None
    props: str | None  # JSON of the type's numeric fields
    ts: int
    ip_hash: str


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> bool: ...
    async def project_by_public_key(self, public_key: str) -> Project | None: ...
    async def project_by_id(self, project_id: int) -> Project | None: ...
    async def key_by_secret(self, secret_key: str) -> SecretKey | None: ...
    async def key_by_kid(self, kid: str) -> SecretKey | None: ...
    async def create_project(self, *, name: str, origins: Sequence[str], require_token: bool = True
                             ) -> tuple[Project, str]: ...
    async def upsert_trace(self, project_id: int, trace: TraceIn) -> bool: ...
    async def get_trace(self, project_id: int, trace_id: str) -> TraceOut | None: ...
    def write_events(self, project_id: int, rows: list[EventRow]) -> Awaitable[list[str]]: ...
    async def meta(self, name: str, default: str) -> str: ...
