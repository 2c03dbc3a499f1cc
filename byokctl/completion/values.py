"""Org slugs and key ids for shell completion, read straight from the vault file.

This runs on every TAB press, so it reads the file through `byokctl.store.peek` (read-only,
plain sqlite3): no master key, no migrations, no vault or provider code. Anything unusable (no
vault yet, a locked or damaged file, an older schema) completes to nothing rather than printing
into the user's prompt.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

LIMIT = 200
# Descriptions are data from the vault shown by the shell (zsh and fish re-parse them): keep
# letters, digits and plain punctuation only.
UNSAFE = re.compile(r"[^\w .,@+()/-]+")


def vault_path(db: str | None) -> Path | None:
    """The vault file a command line points at: `--db` when given, else the usual
    `$BYOKCTL_DB` / `$BYOKCTL_HOME` / data-dir default; None for a PostgreSQL vault, which a
    TAB press does not reach (it would load the driver and wait on the network)."""
    from byokctl.store import target

    where = target(db)
    return None if isinstance(where, str) else where


def _peek(db: str | None, query: Callable[[Path, str, int], list[Any]], incomplete: str) -> list[Any]:
    """The rows `query` (a `byokctl.store.peek` function) gives for the vault `db` points at;
    none if anything goes wrong (no vault, a locked or damaged file, an older schema)."""
    try:
        path = vault_path(db)
        return [] if path is None else query(path, incomplete, LIMIT)
    except Exception:  # noqa: BLE001 - a completion must never print an error into the prompt
        return []


def org_slugs(db: str | None, incomplete: str) -> list[tuple[str, str]]:
    """Org slugs starting with `incomplete`, each with its name and plan as the description."""
    from byokctl.store import peek

    rows = _peek(db, peek.org_slugs, incomplete)
    return [(slug, _describe(f"{name} ({plan})")) for slug, name, plan in rows]


def key_ids(db: str | None, incomplete: str) -> list[tuple[str, str]]:
    """Key ids starting with `incomplete`, each described by provider and owner (no hint: the
    description lands in shell scrollback)."""
    from byokctl.store import peek

    rows = _peek(db, peek.key_ids, incomplete)
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
