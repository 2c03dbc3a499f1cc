"""`platform set-default|show`."""

from __future__ import annotations

from typing import Annotated

import typer

from byokctl.cli import render
from byokctl.cli.common import As, Json, session
from byokctl.services import platform

app = typer.Typer(help="Platform-wide settings: the default provider and model.", no_args_is_help=True)


def _key_warning(d: platform.PlatformDefault) -> None:
    if d.key_id is None:
        render.warn(f"there is no platform key for {d.provider} yet; platform mode fails until "
                    f"you add one with `byokctl key add --platform --provider {d.provider}`")


@app.command("set-default")
def set_default(
    provider: Annotated[str, typer.Argument(metavar="PROVIDER", help="anthropic or openai.")],
    model: Annotated[str, typer.Option("--model", help="Model alias or pinned id (pinned when stored).")],
    base_url: Annotated[str | None, typer.Option(
        "--base-url", help="Endpoint for the platform key, as the SDK expects it.")] = None,
    allow_insecure: Annotated[bool, typer.Option(
        "--allow-insecure", help="Accept a plain-http --base-url to a host other than this machine "
        "(the key then crosses the network unencrypted).")] = False,
    as_: As = None,
    json_: Json = False,
) -> None:
    """Set the provider and model platform-mode orgs run on (platform operator only).

    \b
    Example: byokctl platform set-default anthropic --model haiku
    """
    with session(as_) as ctx:
        change = platform.set_default(ctx, provider, model, base_url, allow_insecure=allow_insecure)
    d = change.after
    for warning in change.warnings:
        render.warn(warning)
    _key_warning(d)
    render.emit(json_, change,
                f"Platform default: {d.provider}/{d.model}"
                + (f" at {d.base_url}" if d.base_url else "") + "."
                if change.changed else
                f"Platform default is already {d.provider}/{d.model}; nothing changed.")


@app.command("show")
def show(json_: Json = False) -> None:
    """Show the provider and model platform-mode orgs run on.

    \b
    Example: byokctl platform show --json
    """
    with session() as ctx:
        d = platform.current(ctx)
    render.emit(json_, d, lambda: render.fields([
        ("provider", d.provider), ("model", d.model), ("base url", d.base_url),
        ("source", "set with platform set-default" if d.configured else "built-in default"),
        ("platform key", d.key_id or "none (add one with `byokctl key add --platform`)"),
    ]))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="platform")
