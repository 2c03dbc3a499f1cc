"""`models list`: the shipped catalog; needs no vault."""

from __future__ import annotations

from typing import Annotated

import typer

from byokctl.cli import render
from byokctl.cli.common import Json
from byokctl.providers import catalog
from byokctl.services import rules

app = typer.Typer(help="The model catalog: aliases, pinned ids and prices.", no_args_is_help=True)


@app.command("list")
def list_(
    provider: Annotated[str | None, typer.Option("--provider", help="anthropic or openai.")] = None,
    json_: Json = False,
) -> None:
    """List the models byokctl knows: pinned ids, aliases and prices per million tokens.

    \b
    Example: byokctl models list --provider openai
    """
    if provider is not None:
        rules.choice(provider, catalog.PROVIDERS, "provider")
    cat = catalog.load()
    items = []
    for p in (provider,) if provider else catalog.PROVIDERS:
        default = cat.pinned(p, None).id
        items += [{**m.to_json(), "default": m.id == default, "catalog_version": cat.version}
                  for m in cat.for_provider(p)]
    render.emit(json_, {"catalog_version": cat.version, "models": items}, lambda: render.table(
        ["provider", "model", "aliases", "$/Mtok in", "$/Mtok out", "default", "end of life"],
        [(m["provider"], m["id"], ", ".join(m["aliases"]), f"{m['input_per_mtok']:.2f}",
          f"{m['output_per_mtok']:.2f}", "yes" if m["default"] else "", m["deprecated"] or "")
         for m in items],
        title=f"catalog {cat.version}", no_wrap=("model", "end of life"), drop=("default", "aliases")))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="models")
