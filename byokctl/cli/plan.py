"""`plan` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="Set plans and grant or revoke BYOK grace.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="plan")
