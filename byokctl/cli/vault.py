"""`init` and `vault status|rotate-master|rekey|check`."""

from __future__ import annotations

from typing import Annotated

import typer

from byokctl.cli import render
from byokctl.cli.common import STATE, Json, session
from byokctl.services import vaultops

app = typer.Typer(help="Inspect and maintain the vault's keys.", no_args_is_help=True)


def init(
    master_key_file: Annotated[str | None, typer.Option(
        "--master-key-file", metavar="PATH",
        help="Keep the master key in this file (mode 0600) instead of the OS keyring.")] = None,
    json_: Json = False,
) -> None:
    """Create a new vault and its master key.

    The master key goes to the OS keyring unless $BYOKCTL_MASTER_KEY is set (CI) or
    --master-key-file is given (headless servers).

    Example: byokctl init --master-key-file ~/.config/byokctl/master.key
    """
    result = vaultops.init(STATE["db"], master_key_file)
    render.emit(json_, result, lambda: render.line(
        f"Created vault {result.path} (master key in {result.master_location})."))


@app.command("status")
def status(json_: Json = False) -> None:
    """Show where the vault and its master key live, schema version and counts.

    Example: byokctl vault status --json
    """
    with session() as ctx:
        st = vaultops.status(ctx)
    render.emit(json_, st, lambda: render.fields(st.to_json().items()))


def register(root: typer.Typer) -> None:
    root.command("init")(init)
    root.add_typer(app, name="vault")
