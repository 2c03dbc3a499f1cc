"""Completion callbacks for typer's parameters (`autocompletion=`), over the vault queries in
`byokctl.completion.values`. The shells' TAB normally never reaches them: `byokctl.completion`
answers from the generated command tree without loading typer. They serve the other shells
typer supports, and tests/cli/test_completion.py checks the two paths agree."""

from __future__ import annotations

from typing import Any

from byokctl.completion import values


def _db(ctx: Any) -> str | None:
    """The `--db` given: after the subcommand (kept in the shared `meta`), else the root's."""
    if ctx is None:
        return None
    if "byokctl.db" in ctx.meta:
        return ctx.meta["byokctl.db"]
    return (ctx.find_root().params or {}).get("db")


def org_slugs(ctx: Any, incomplete: str) -> list[tuple[str, str]]:
    return values.org_slugs(_db(ctx), incomplete)


def key_ids(ctx: Any, incomplete: str) -> list[tuple[str, str]]:
    return values.key_ids(_db(ctx), incomplete)
