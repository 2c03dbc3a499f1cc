"""`key` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="Store, test, rotate and remove API keys (secrets never shown).", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="key")
