"""The gateway's background tasks (the alert pass, forwarding, auto-fill, the daily salt): stopping one."""

from __future__ import annotations

import asyncio
import contextlib


async def cancel(task: asyncio.Task | None) -> None:
    """Cancel `task` and wait until it has finished unwinding, so nothing it was doing outlives the gateway's stop."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
