"""Bounds on what clients send that the schema types cannot state: how deep JSON nests, how large and how wide free-form
JSON is, and how far a client's clock is believed. Plain values in, plain values out.
"""

from __future__ import annotations

import math
import re
from array import array
from itertools import accumulate
from typing import Any, NamedTuple

import msgspec

# Any request body, checked on its raw bytes before decoding: msgspec recurses per level and raises RecursionError at
# ~1,000. The deepest body we define is a trace with metadata at its own limit, 1 + MAX_METADATA_DEPTH levels.
MAX_BODY_DEPTH = 32
MAX_METADATA_DEPTH = 8
MAX_METADATA_BYTES = 16 * 1024  # encoded as JSON
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# A client's `ts` is believed from 7 days before to 5 minutes after the server's clock (a widget's offline queue, a
# slightly fast clock); outside that window the event is stored and ordered at the time it was received.
TS_PAST_MS = 7 * 86_400_000
TS_FUTURE_MS = 5 * 60_000

# A JSON string, unrolled so a long one is one linear scan.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"\\')
# Opening brackets as 1, closing as -1 (0xff, read as a signed byte), everything else removed.
_DEPTH_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def nesting_exceeds(body: bytes, limit: int = MAX_BODY_DEPTH) -> bool:
    """Whether a JSON body nests arrays and objects deeper than `limit`, found without parsing it (a loop in C, never
    a recursion): the highest running count of open brackets outside strings."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    structure = body.translate(None, _NOT_STRUCTURE)  # brackets, quotes and backslashes only
    if b"\\" in structure:  # escapes need the characters they escape: strings are removed from the body itself
        structure = body
    else:
        # `""` is an empty string or the end of one and the start of the next: dropping it keeps every bracket outside
        # strings where it was, and leaves the regex far fewer strings to remove.
        structure = structure.replace(b'""', b"")
    steps = array("b", _STRING.sub(b"", structure).translate(_DEPTH_STEPS, _NOT_BRACKETS))
    return max(accumulate(steps), default=0) > limit


def check_json(value: Any, *, max_depth: int = MAX_METADATA_DEPTH, max_bytes: int = MAX_METADATA_BYTES) -> str | None:
    """Why a decoded JSON value is out of bounds (nested deeper than `max_depth` containers, an integer outside signed
    64 bits, a float that is not finite, more than `max_bytes` encoded), or None if it is within them."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            if isinstance(item, int) and not isinstance(item, bool) and not INT64_MIN <= item <= INT64_MAX:
                return "an integer is outside the signed 64-bit range"  # not shown: str() of a huge int raises
            if isinstance(item, float) and not math.isfinite(item):
                return "numbers must be finite"
            continue
        if depth > max_depth:
            return f"nested deeper than {max_depth} levels"
        stack.extend((child, depth + 1) for child in children)
    size = len(msgspec.json.encode(value))
    if size > max_bytes:
        return f"{size} bytes encoded; at most {max_bytes}"
    return None


class ClockWindow(NamedTuple):
    """The client times believed for a request received at `received` (ms): from `earliest` to `latest`."""

    earliest: int
    latest: int
    received: int

    @classmethod
    def at(cls, received_ms: int) -> ClockWindow:
        return cls(received_ms - TS_PAST_MS, received_ms + TS_FUTURE_MS, received_ms)

    def event_time(self, client_ms: int | float) -> int:
        """The time to store and order an event by: the client's `ts` inside the window (as an int: a client may
        write 5.0), else when it was received. So a vote dated in 2100 is ordered as if sent now, and the next real
        vote still replaces it."""
        return int(client_ms) if self.earliest <= client_ms <= self.latest else self.received
