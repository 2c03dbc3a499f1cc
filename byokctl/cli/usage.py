"""`usage show`."""

from __future__ import annotations

from typing import Annotated

import typer

from byokctl.cli import complete, render
from byokctl.cli.common import As, Json, session
from byokctl.services import usage

app = typer.Typer(help="Tokens, cost and credits per org, provider, model, member or day.",
                  no_args_is_help=True)


@app.command("show")
def show(
    org: Annotated[str | None, typer.Argument(
        metavar="ORG", help="One org (default: all).", autocompletion=complete.org_slugs)] = None,
    since: Annotated[str | None, typer.Option(
        "--since", metavar="DATE", help="From this moment: a date (YYYY-MM-DD, UTC) or an ISO "
        "date-time (2026-12-01T09:00Z).")] = None,
    until: Annotated[str | None, typer.Option(
        "--until", metavar="DATE", help="Up to this moment: a date (YYYY-MM-DD, through its end, "
        "UTC) or an ISO date-time (2026-12-31T18:00Z).")] = None,
    by: Annotated[str, typer.Option("--by", help="provider, model, member, mode, day or org.")] = "provider",
    as_: As = None,
    json_: Json = False,
) -> None:
    """Report calls, tokens, estimated cost and credits charged.

    \b
    Example: byokctl usage show acme --since 2026-11-01 --by day
    """
    with session(as_) as ctx:
        rep = usage.show(ctx, org, since=since, until=until, by=by)

    def human() -> None:
        cols = [rep.by, "calls", "errors", "input tokens", "output tokens", "cost (USD)", "credits"]

        def cells(d: dict, label: str) -> list:
            return [label, d["calls"], d["errors"], d["input_tokens"], d["output_tokens"],
                    f"{d['cost_usd']:.4f}", d["credits_charged"]]

        render.table(cols, [*(cells(r, r[rep.by]) for r in rep.rows), cells(rep.totals, "total")],
                     no_wrap=("day",))
        for b in rep.billing:
            render.line(b["note"])

    render.emit(json_, rep, human)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="usage")
