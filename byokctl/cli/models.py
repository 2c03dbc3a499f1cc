"""`models list`: the shipped catalog; needs no vault."""

from __future__ import annotations

from typing import Annotated

import typer

from byokctl import clock
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
    """List the models byokctl knows: pinned ids, aliases, prices per million tokens and status.

    The status is active, `retiring DATE` (an end of life is announced) or `retired DATE` (past
    it: no org or platform default may choose it), with the successor to move to.

    \b
    Example: byokctl models list --provider openai
    """
    if provider is not None:
        rules.choice(provider, catalog.PROVIDERS, "provider")
    cat = catalog.load()
    now = clock.now()
    items, labels = [], []
    for p in (provider,) if provider else catalog.PROVIDERS:
        default = cat.pinned(p, None).id
        for m in cat.for_provider(p):
            life = m.lifecycle(now)
            items.append({**m.to_json(), **life.to_json(), "default": m.id == default,
                          "catalog_version": cat.version})
            labels.append(life.label() + (f" → {m.successor}" if m.successor and life.warns else ""))
    render.emit(json_, {"catalog_version": cat.version, "at": clock.iso(now), "models": items},
                lambda: render.table(
        ["provider", "model", "aliases", "$/Mtok in", "$/Mtok out", "default", "status"],
        [(m["provider"], m["id"], ", ".join(m["aliases"]), f"{m['input_per_mtok']:.2f}",
          f"{m['output_per_mtok']:.2f}", "yes" if m["default"] else "", label)
         for m, label in zip(items, labels, strict=True)],
        title=f"catalog {cat.version}", no_wrap=("model", "status"), drop=("default", "aliases")))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="models")
