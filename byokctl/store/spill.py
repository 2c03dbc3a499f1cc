"""A set of strings too large to hold in memory, kept in a private temporary SQLite file.

Scratch space for a command that streams (`export` handing out environment variable names),
never the vault: whatever engine holds the vault, this is SQLite's own temporary file (named
"" so that SQLite makes it, unlinked, and removes it when it is closed), with a bounded page
cache, so that it holds no more memory for 100,000 names than for 10,000.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

CACHE_KIB = 1024


class SpillSet:
    """Strings, each held once; membership and adds in O(log n) on disk. Nothing is ever
    committed: the file goes when the set is closed."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._conn = sqlite3.connect("", isolation_level=None)  # "": a private temp file
        self._conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")  # KiB
        self._conn.execute("CREATE TABLE taken (name TEXT PRIMARY KEY) WITHOUT ROWID")
        self._conn.execute("BEGIN")  # never committed: the file goes when it is closed
        self._conn.executemany("INSERT INTO taken VALUES (?)", ((n,) for n in names))

    def __contains__(self, name: object) -> bool:
        return self._conn.execute("SELECT 1 FROM taken WHERE name = ?", (name,)).fetchone() is not None

    def add(self, name: str) -> None:
        """Add `name`; one already held is left as it is."""
        self._conn.execute("INSERT INTO taken VALUES (?) ON CONFLICT (name) DO NOTHING", (name,))

    def close(self) -> None:
        """Drop the set and its file."""
        self._conn.close()
