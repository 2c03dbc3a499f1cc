"""`member` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="Add and manage an org's members and their roles.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="member")
