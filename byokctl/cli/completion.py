"""`completion SHELL`: print byokctl's shell-completion script (the one a wheel installs)."""

from __future__ import annotations

from typing import Annotated

import typer

from byokctl.cli import render
from byokctl.cli.common import Json
from byokctl.services import rules

SHELLS = ("bash", "zsh", "fish")


def completion(
    shell: Annotated[str, typer.Argument(metavar="SHELL", help="bash, zsh or fish.")],
    json_: Json = False,
) -> None:
    """Print the shell-completion script for bash, zsh or fish.

    Redirect it where the shell looks (a wheel installs the same scripts under share/).

    \b
    Example: byokctl completion bash > ~/.local/share/bash-completion/completions/byokctl
    """
    from byokctl.completion.scripts import SCRIPTS

    rules.choice(shell, SHELLS, "shell")
    script = SCRIPTS[shell].rstrip("\n") + "\n"
    render.emit(json_, {"shell": shell, "script": script}, lambda: render.raw(script))


def register(root: typer.Typer) -> None:
    root.command("completion")(completion)
