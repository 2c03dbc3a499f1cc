"""A glance at a vault file for shell completion: org slugs and key ids by prefix.

This runs on every TAB press, so it opens the file read-only with plain sqlite3 (no Store, no
migrations, no pragmas, a short busy timeout) and imports nothing else; the caller turns any
failure into no completions. It reads the SQLite file itself: a PostgreSQL engine gives its
own module with the same two functions.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

# Long enough for a WAL read that waits on a checkpoint, short enough not to stall the prompt.
TIMEOUT_S = 0.2


def _query(path: Path, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """The rows of one read, as plain tuples; [] if there is no vault file (never creates one)."""
    if not path.is_file():
        return []
    uri = path.absolute().as_uri() + "?mode=ro"
    with closing(sqlite3.connect(uri, uri=True, timeout=TIMEOUT_S)) as conn:
        return conn.execute(sql, params).fetchall()


def _like(prefix: str) -> str:
    """A LIKE pattern (escape character `\\`) for the values starting with `prefix`."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def org_slugs(path: Path, prefix: str, limit: int) -> list[tuple[str, str, str]]:
    """`(slug, name, plan)` of up to `limit` orgs whose slug starts with `prefix`, by slug."""
    return _query(path, "SELECT slug, name, plan FROM orgs WHERE slug LIKE ? ESCAPE '\\' "
                  "ORDER BY slug LIMIT ?", (_like(prefix), limit))


def key_ids(path: Path, prefix: str, limit: int) -> list[tuple[str, str, str, str | None, str | None]]:
    """`(id, provider, scope, org, member)` of up to `limit` keys whose id starts with
    `prefix`, by id."""
    return _query(path, "SELECT id, provider, scope, org, member FROM keys WHERE id LIKE ? "
                  "ESCAPE '\\' ORDER BY id LIMIT ?", (_like(prefix), limit))
