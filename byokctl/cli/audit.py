"""`audit` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="Read and verify the tamper-evident audit log.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="audit")
