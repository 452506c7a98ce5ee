"""The store: projects, keys, traces and the event log. One interface (`Store`); SQLite (`sqlite.py`) is the default.

Every read and write of the gateway, the CLI and the demo goes through `Store`, and all SQL lives in this package. To
add a store method: a plain function of a connection in `tables.py` (reads, and the write jobs that run inside a
transaction), the method here on `Store`, and in `SQLiteStore` a read runs `tables.<function>` on the read connection
while a write becomes a job (`writer.py`: an `Op` Struct and its line in `run_job`). A second implementation (e.g.
PostgreSQL) is another class with these methods.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Callable, Generic, Protocol, Sequence, TypeVar

import msgspec

from gateway.schemas import DEFAULT_EVENTS_PAGE, Reason, TraceIn, TraceOut
from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.store.alerts import Alerts
    from gateway.store.outbox import Outbox
    from gateway.store.review import ReviewStore
    from gateway.store.rollups import Stats


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


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown about a secret key: never the key, nor its hash."""

    kid: str
    created_at: int
    revoked_at: int | None


RowId = TypeVar("RowId", uuid.UUID, str)


class EventRow(msgspec.Struct, Generic[RowId], array_like=True):  # array_like: smaller, faster frames to the writer
    """One validated event, ready to insert. The gateway builds it with the event's `uuid.UUID`; msgpack carries that
    to the writer as its canonical text, which the writer reads as `EventRow[str]`."""

    id: RowId
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
    outbox: Outbox  # forwarding: destinations, the outbox, the delivery lease (gateway/store/outbox.py)
    review: ReviewStore  # reviewers, labels, queues, leases, dataset reads (gateway/store/review.py)
    stats: Stats  # /v1/stats from the rollups, hourly counts for the drift detector (gateway/store/rollups.py)
    alerts: Alerts  # drift state, alerts, the alert webhook and its outbox (gateway/store/alerts.py)

    async def open(self) -> None:
        """Ready for use; creates or migrates the schema."""

    async def close(self) -> None: ...
    async def ping(self) -> bool: ...

    # Projects and keys
    async def project_by_public_key(self, public_key: str) -> Project | None: ...
    async def project_by_id(self, project_id: int) -> Project | None: ...
    async def list_projects(self) -> list[Project]: ...
    async def create_project(self, *, name: str, origins: Sequence[str], require_token: bool = True
                             ) -> tuple[Project, str]:
        """The new project and its first secret key (shown once: the store keeps a hash and a derived key)."""

    async def key_by_secret(self, secret_key: str) -> SecretKey | None: ...
    async def key_by_kid(self, kid: str) -> SecretKey | None: ...
    async def keys_of(self, project_id: int) -> list[KeyInfo]: ...
    async def add_secret_key(self, project_id: int) -> str:
        """A new secret key for the project (shown once)."""

    async def revoke_secret_key(self, project_id: int, kid: str) -> bool:
        """Whether the project had this live key (now revoked)."""

    # Traces and events
    async def upsert_trace(self, project_id: int, trace: TraceIn) -> bool:
        """Whether the trace is new."""

    async def get_trace(self, project_id: int, trace_id: str, *, after: str | None = None,
                        limit: int = DEFAULT_EVENTS_PAGE) -> TraceOut | None:
        """The trace and a page of its events (`tables.get_trace`); ValueError if `after` is not one of them."""

    async def write_events(self, project_id: int, rows: list[EventRow[uuid.UUID]]) -> list[str]:
        """Per row, once committed: "accepted", "duplicate" (its id is stored already) or "unknown_trace".
        StoreUnavailable if nothing could be committed."""

    async def meta(self, name: str, default: str) -> str:
        """The stored value of `name`, storing `default` first if there is none."""

    async def salt_of_day(self, day: int) -> str:
        """The salt of client-IP hashes on `day` (days since the epoch, UTC), created by the first replica to ask;
        every earlier day's salt is deleted."""


def create_store(settings: Settings, *, writer_process: bool = True,
                 on_commit: Callable[[int, float], None] = lambda events, seconds: None) -> Store:
    """The store the settings name. `writer_process=False` for commands: see `SQLiteStore`."""
    from gateway.store.sqlite import SQLiteStore

    return SQLiteStore(settings.db, synchronous=settings.sqlite_synchronous,
                       busy_timeout_ms=settings.sqlite_busy_timeout_ms, max_batch=settings.commit_max_batch,
                       on_commit=on_commit, writer_process=writer_process)
