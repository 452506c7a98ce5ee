"""Whether the SQLite files a process opened are still the ones at their paths.

A connection keeps the database and its `-wal` open by descriptor: if either file is deleted or replaced under a running
gateway, SQLite goes on writing to the unlinked file, commits succeed, and what they hold is lost with the process.
So the writer compares, before it acknowledges a commit, the (device, inode) of each file it opened with what is at
the path now, and the readiness probe does the same (`tests/test_store_files.py`): two `stat` calls.
"""

from __future__ import annotations

import os


class StoreFiles:
    """The database and WAL files as they were when `StoreFiles` was made (after the connection opened them)."""

    def __init__(self, path: str) -> None:
        self.paths = (path, path + "-wal")
        self.identities = tuple(_identity(p) for p in self.paths)

    def problem(self) -> str | None:
        """What changed since the files were opened, or None if both are still the ones opened."""
        for path, opened in zip(self.paths, self.identities):
            now = _identity(path)
            if now != opened:
                if opened is None:
                    continue  # no WAL at open (no writer had run yet): nothing of ours can be in one
                return f"{path} was {'removed' if now is None else 'replaced'} while the gateway had it open"
        return None


def _identity(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino
