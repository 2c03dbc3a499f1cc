"""Org slugs and key ids for shell completion, read straight from the vault file.

This runs on every TAB press, so it opens the file read-only with plain sqlite3: no master key,
no migrations, no vault or provider code. Anything unusable (no vault yet, a locked or damaged
file, an older schema) completes to nothing rather than printing into the user's prompt.
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

# Long enough for a WAL read that waits on a checkpoint, short enough not to stall the prompt.
TIMEOUT_S = 0.2
LIMIT = 200
# Descriptions are data from the vault shown by the shell (zsh and fish re-parse them): keep
# letters, digits and plain punctuation only.
UNSAFE = re.compile(r"[^\w .,@+()/-]+")


def vault_path(db: str | None) -> Path:
    """The vault a command line points at: `--db` when given, else the usual `$BYOKCTL_DB` /
    `$BYOKCTL_HOME` / data-dir default."""
    from byokctl.store import resolve_path

    return resolve_path(db)


def _query(db: str | None, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    try:
        path = vault_path(db)
        if not path.is_file():
            return []
        uri = path.absolute().as_uri() + "?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=TIMEOUT_S)) as conn:
            return conn.execute(sql, params).fetchall()
    except Exception:  # noqa: BLE001 - a completion must never print an error into the prompt
        return []


def _like(incomplete: str) -> str:
    escaped = incomplete.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def org_slugs(db: str | None, incomplete: str) -> list[tuple[str, str]]:
    """Org slugs starting with `incomplete`, each with its name and plan as the description."""
    rows = _query(db, "SELECT slug, name, plan FROM orgs WHERE slug LIKE ? ESCAPE '\\' "
                  "ORDER BY slug LIMIT ?", (_like(incomplete), LIMIT))
    return [(slug, _describe(f"{name} ({plan})")) for slug, name, plan in rows]


def key_ids(db: str | None, incomplete: str) -> list[tuple[str, str]]:
    """Key ids starting with `incomplete`, each described by provider and owner (no hint: the
    description lands in shell scrollback)."""
    rows = _query(db, "SELECT id, provider, scope, org, member FROM keys WHERE id LIKE ? "
                  "ESCAPE '\\' ORDER BY id LIMIT ?", (_like(incomplete), LIMIT))
    out = []
    for key_id, provider, scope, org, member in rows:
        owner = {"platform": "platform", "org": org, "member": f"{member} ({org})"}.get(scope, scope)
        out.append((key_id, _describe(f"{provider} key of {owner}")))
    return out


# What a completing parameter offers, by the name the generated tree gives it (the name of
# the typer callback in byokctl.cli.complete that wraps the same query).
SOURCES = {"org_slugs": org_slugs, "key_ids": key_ids}


def _describe(text: str) -> str:
    return " ".join(UNSAFE.sub(" ", text).split())[:60]
