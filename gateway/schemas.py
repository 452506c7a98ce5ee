"""Wire and storage schemas. These Structs are the only validators; OpenAPI is generated from them."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from gateway.bounds import MAX_METADATA_BYTES, MAX_METADATA_DEPTH
from gateway.messages import Message

Id = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
ShortText = Annotated[str, Meta(max_length=200)]
MAX_TEXT_CHARS = 1_000_000


def _whole(ge: int, le: int) -> Any:
    """A whole number in [ge, le]. JSON does not tell 5 from 5.0, nor does JSON Schema's "integer": either spelling is
    accepted (a fraction is refused). Events keep it as the client wrote it and the events route stores it as an int
    (no `__post_init__` on the hot path: it cost ~0.5 µs per event); a trace's `ts` becomes an int on decode."""
    return Annotated[int, Meta(ge=ge, le=le)] | Annotated[float, Meta(ge=ge, le=le, multiple_of=1)]


def _as_int(value: int | float | None) -> Any:
    return int(value) if type(value) is float else value


# Client clocks in ms since the Unix epoch, before 2100-01-01 (the events route also holds them to a window around
# the server's clock: gateway/bounds.py). Dwell up to 30 days; a copy at most as long as the longest trace output.
Millis = _whole(0, 4_102_444_799_999)
DwellMillis = _whole(0, 30 * 86_400_000)
CopiedChars = _whole(0, MAX_TEXT_CHARS)
Attempt = _whole(1, 10_000)
Fraction = Annotated[float, Meta(ge=0.0, le=1.0)]

DEFAULT_REASONS: tuple[tuple[str, str], ...] = (
    ("wrong_information", "Wrong information"),
    ("too_long", "Too long"),
    ("didnt_follow_instructions", "Didn't follow instructions"),
    ("offensive_or_unsafe", "Offensive or unsafe"),
    ("other", "Other"),
)

MAX_EVENTS_PER_REQUEST = 100
MAX_EVENT_BYTES = 32 * 1024
MAX_COMMENT_CHARS = 1000


# --- Browser events: a tagged union on "type". Unknown fields are refused, so no text can ride along. ---


# An event's trace id needs no pattern of its own: it must equal a logged trace's id (checked when logged) and its
# token's, or the event is refused (invalid_token, unknown_trace). Each pattern costs a regex call per event, which
# was a third of decoding one.
TraceRef = Annotated[str, Meta(min_length=1, max_length=200)]


class _Event(Struct, tag_field="type", forbid_unknown_fields=True, kw_only=True):
    # A UUID, in either case, with or without its dashes: decoded to a uuid.UUID, so each UUID is one idempotency key
    # whichever way it was written, and encoded back (in answers, to the writer) as canonical lower-case text. msgspec
    # checks it in C; the same check as a pattern cost ~1.7 µs per event, a third of decoding one.
    id: uuid.UUID
    trace_id: TraceRef
    ts: Millis
    token: Annotated[str, Meta(max_length=2048)] | None = None
    session_id: Id | None = None
    dwell_ms: DwellMillis | None = None


class Feedback(_Event, tag="feedback"):
    value: Literal[0, 1]
    reason: Annotated[str, Meta(max_length=64)] | None = None
    comment: Annotated[str, Meta(max_length=MAX_COMMENT_CHARS)] | None = None


class Shown(_Event, tag="shown"):
    pass


class Copied(_Event, tag="copied"):
    length: CopiedChars


class Edited(_Event, tag="edited"):
    edit_ratio: Fraction


class Regenerated(_Event, tag="regenerated"):
    attempt: Attempt


class Rephrased(_Event, tag="rephrased"):
    similarity: Fraction


class Abandoned(_Event, tag="abandoned"):
    pass


class Accepted(_Event, tag="accepted"):
    how: Literal["accept", "insert"]


Event = Feedback | Shown | Copied | Edited | Regenerated | Rephrased | Abandoned | Accepted
# Per event type, the fields kept in the event row's `props` (JSON); feedback's own fields have columns.
EVENT_PROPS: dict[type, tuple[str, ...]] = {
    cls: (*(f for f in cls.__struct_fields__ if f not in _Event.__struct_fields__ and f not in Feedback.__struct_fields__),
          "dwell_ms")
    for cls in Event.__args__
}


PublicKey = Annotated[str, Meta(max_length=64)]


class EventBatch(Struct, forbid_unknown_fields=True):
    project: PublicKey
    events: list[msgspec.Raw]


class TypedEventBatch(Struct, forbid_unknown_fields=True):
    """The same body as `EventBatch`, decoded in one pass: used when every event in it is valid (the common case)."""

    project: PublicKey
    events: list[Event]


class ServerEventBatch(Struct, forbid_unknown_fields=True):
    """The body of `POST /v1/events` with `Authorization: Bearer sk_...`: the key names the project."""

    events: list[msgspec.Raw]
    project: PublicKey | None = None


class EventResult(Struct, omit_defaults=True):
    id: str  # the event's uuid.UUID (encoded as its canonical text), or the text an event that did not decode carried
    status: Literal["accepted", "duplicate", "rejected"]
    error: str | None = None


class EventResults(Struct):
    results: list[EventResult]


# --- Server-side traces ---

class TraceIn(Struct, forbid_unknown_fields=True, kw_only=True):
    trace_id: Id
    session_id: Id
    user_id: ShortText | None = None
    model: ShortText | None = None
    template: ShortText | None = None
    template_version: ShortText | None = None
    # A string, or the chat messages as they were (`gateway.messages`); stored and answered as sent.
    input: Annotated[str, Meta(max_length=MAX_TEXT_CHARS)] | Annotated[list[Message], Meta(max_length=1000)] | None \
        = None
    output: Annotated[str, Meta(max_length=MAX_TEXT_CHARS)] | None = None
    metadata: Annotated[dict[str, Any], Meta(description=(
        f"Any JSON object within bounds the route checks (`gateway/bounds.py`): nested at most {MAX_METADATA_DEPTH} "
        f"levels, integers within signed 64 bits, finite numbers, at most {MAX_METADATA_BYTES} bytes encoded"))] \
        | None = None
    ts: Millis | None = None
    parent_trace_id: Id | None = None  # the trace this one regenerates: same prompt, a new answer

    def __post_init__(self) -> None:
        self.ts = _as_int(self.ts)


class TraceCreated(Struct):
    trace_id: str
    session_id: str
    feedback_token: str
    expires_at: int


class Rating(Struct):
    session_id: str
    value: int
    reason: str | None
    comment: str | None
    updated_at: int


class StoredEvent(Struct, omit_defaults=True):
    id: str
    type: str
    session_id: str
    ts: int
    received_at: int
    value: int | None = None
    reason: str | None = None
    comment: str | None = None
    length: int | None = None
    edit_ratio: float | None = None
    attempt: int | None = None
    similarity: float | None = None
    how: str | None = None
    dwell_ms: int | None = None


class TraceOut(Struct):
    trace_id: str
    session_id: str
    user_id: str | None
    model: str | None
    template: str | None
    template_version: str | None
    input: str | list[Message] | None
    output: str | None
    metadata: dict[str, Any] | None
    ts: int
    events: list[StoredEvent]
    rating: list[Rating]
    signals: dict[str, int]
    parent_trace_id: str | None = None
    next_after: str | None = None  # more events follow: ask again with ?after=<this>


# `GET /v1/traces/{id}` answers at most this many events per page (`?limit=`, up to the max); rating and signals whole.
DEFAULT_EVENTS_PAGE = 1000
MAX_EVENTS_PAGE = 5000


# --- Projects ---

class Reason(Struct):
    code: str
    label: str


class Labels(Struct):
    up: str = "Good response"
    down: str = "Bad response"
    reason_prompt: str = "What went wrong?"
    comment_placeholder: str = "What could I have done better?"
    submit: str = "Send"
    thanks: str = "Thanks for your feedback!"


class ProjectConfig(Struct):
    public_key: str
    require_token: bool
    delay_ms: int
    reasons: list[Reason]
    labels: Labels


# --- Operations ---

class Health(Struct):
    status: Literal["ok"] = "ok"


class Readiness(Struct):
    status: Literal["ready", "degraded", "unavailable"]
    checks: dict[str, bool]  # "store", and "redis" when one is configured


class Problem(Struct, omit_defaults=True):
    type: str
    title: str
    status: int
    detail: str
