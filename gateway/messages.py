"""A trace's input as chat messages, and the prompt two responses must share to be compared.

A trace's `input` is a string or a list of `{"role", "content"}` messages; exports and pairing read both the same way.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

Role = Literal["system", "user", "assistant", "tool"]


class Message(Struct, forbid_unknown_fields=True):
    role: Role
    content: Annotated[str, Meta(max_length=1_000_000)]


Input = str | list[Message]

_encode = msgspec.json.Encoder(order="deterministic").encode


def as_messages(input: Input) -> list[Message]:
    """The input as messages: a string is one user message."""
    return [Message("user", input)] if isinstance(input, str) else list(input)


def prompt_key(input: Input) -> str:
    """A stable key for a prompt: equal for equal messages, and a string equals its one-user-message list.

    A regeneration (a trace with `parent_trace_id`) takes its parent's key rather than its own, so that a whole chain
    of regenerations answers one prompt; the store resolves that when it writes the trace.
    """
    return hashlib.sha256(_encode(as_messages(input))).hexdigest()


def trace_text(input: Input | None, output: str | None) -> str:
    """What the embedder reads of a trace: the last user turn and the output.

    Not the whole input: a system prompt belongs to the template and is the same in every trace of it, and earlier
    turns would make a long conversation look like every other long conversation.
    """
    turns = [] if input is None else as_messages(input)
    question = next((m.content for m in reversed(turns) if m.role == "user"), "")
    return f"{question}\n{output or ''}"
