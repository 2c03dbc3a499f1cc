"""`credits add|show`."""

from __future__ import annotations

from typing import Annotated

import typer

from byokctl.cli import render
from byokctl.cli.common import As, Json, Org, session
from byokctl.services import credits

app = typer.Typer(help="Add to and show an org's credit balance.", no_args_is_help=True)


# ignore_unknown_options: `credits add acme -5` reaches the service as the amount "-5" and is
# refused as a negative amount, instead of Click's "No such option: -5".
@app.command("add", context_settings={"ignore_unknown_options": True})
def add(
    org: Org,
    amount: Annotated[str, typer.Argument(metavar="N", help="Credits to add (a positive whole number).",
                                          show_default=False)],
    reason: Annotated[str | None, typer.Option("--reason", help="Why, for the audit log.")] = None,
    as_: As = None,
    json_: Json = False,
) -> None:
    """Add credits to an org's balance (platform operator only).

    An outstanding shortfall (calls that cost more than the balance held) is paid first; the
    rest goes to the balance.

    \b
    Example: byokctl credits add acme 500 --reason "monthly top-up"
    """
    n = credits.parse_amount(amount)
    with session(as_) as ctx:
        grant = credits.add(ctx, org, n, reason)
    paid = (f" ({grant.paid_shortfall} paid the shortfall"
            + (f"; {grant.shortfall} still owed)" if grant.shortfall else ")")
            if grant.paid_shortfall else "")
    render.emit(json_, grant, f"Added {grant.added} credits to org {grant.org}: "
                f"{grant.before} → {grant.balance}{paid}.")


@app.command("show")
def show(org: Org, as_: As = None, json_: Json = False) -> None:
    """Show an org's credit balance and any shortfall.

    The shortfall is what calls that cost more than the balance held still owe; the next
    `credits add` pays it first.

    \b
    Example: byokctl credits show acme --json
    """
    with session(as_) as ctx:
        bal = credits.show(ctx, org)
    owed = (f" Shortfall: {bal.shortfall} credits owed, paid first by the next "
            f"`byokctl credits add {bal.org} N`." if bal.shortfall else "")
    render.emit(json_, bal, f"Org {bal.org}: {bal.balance} credits.{owed}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="credits")
