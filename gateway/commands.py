"""What the CLI's commands share (`gateway/cli.py` and the command modules of each area): running a command on the
store its settings name, and finding a project by its public key."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable

from gateway import settings as config
from gateway.store import Project, Store, create_store

Command = Callable[[argparse.Namespace, Store], Awaitable[int]]


def with_store(command: Command) -> Callable[[argparse.Namespace], int]:
    """A command run on the store its options (`config.from_options`) name, opened in command mode (no writer
    process) and closed after."""
    def run(args: argparse.Namespace) -> int:
        async def main() -> int:
            store = create_store(config.from_options(args), writer_process=False)
            await store.open()
            try:
                return await command(args, store)
            finally:
                await store.close()

        return asyncio.run(main())

    return run


async def project_or_exit(store: Store, public_key: str) -> Project:
    project = await store.project_by_public_key(public_key)
    if project is None:
        raise SystemExit(f"backchannel: no project has public key {public_key!r}")
    return project
