"""When to try again: exponential backoff with full jitter, `Retry-After`, and a deadline. Pure: plain values only.

Used by the delivery worker (per queued record, for up to 72 hours) and by the Python client (a few quick retries).
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass

_MAX_EXPONENT = 62  # 2**62 seconds is past any cap; keeps the float multiplication finite


@dataclass(frozen=True)
class Backoff:
    """After the `attempt`-th failure (1, 2, ...) wait `rand * min(cap, base * 2**(attempt - 1))` seconds, `rand`
    uniform in [0, 1) ("full jitter": retries of many rows spread out instead of arriving together); never earlier than
    the server's `Retry-After`; give up once the next try would fall more than `give_up` seconds after the first."""

    base: float = 1.0
    cap: float = 600.0
    give_up: float = 72 * 3600.0

    def window(self, attempt: int) -> float:
        """The upper bound of the jittered delay after the `attempt`-th failure."""
        if attempt < 1:
            raise ValueError(f"attempt counts failures from 1, got {attempt}")
        return min(self.cap, self.base * 2.0 ** min(attempt - 1, _MAX_EXPONENT))

    def next_attempt(self, attempt: int, now: float, *, first_attempt_at: float, rand: float,
                     retry_after_at: float | None = None) -> float | None:
        """The time (same clock as `now`) of the next try after the `attempt`-th failure, or None: give up (dead)."""
        if not 0.0 <= rand < 1.0:
            raise ValueError(f"rand must be in [0, 1), got {rand}")
        at = now + rand * self.window(attempt)
        if retry_after_at is not None:
            at = max(at, retry_after_at)
        return None if at > first_attempt_at + self.give_up else at


def retry_after_at(header: str | None, now: float) -> float | None:
    """The absolute time a `Retry-After` header (delay in seconds, or an HTTP date) points at; None if absent or bad."""
    if header is None:
        return None
    text = header.strip()
    if text.isdigit():
        return now + int(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a date without a zone is malformed, not local time
        return None
    return max(now, when.timestamp())
