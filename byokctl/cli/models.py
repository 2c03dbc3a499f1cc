"""`models` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="The model catalog: aliases, pinned ids and prices.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="models")
