"""`platform` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="Platform-wide settings: the default provider and model.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="platform")
