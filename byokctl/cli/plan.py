"""`plan set|grant-grace|revoke-grace|show`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated

import typer

from byokctl.cli import render
from byokctl.cli.common import As, Json, Org, Yes, confirm, session
from byokctl.services import plans

app = typer.Typer(help="Set plans and grant or revoke BYOK grace.", no_args_is_help=True)


def _gate_line(g: plans.GateView) -> str:
    if g.byok_allowed_by_plan:
        return f"BYOK allowed (plan {g.plan} includes it)"
    if g.grace_active:
        return f"BYOK allowed until {render.when(g.grace_until)} UTC (grace grant)"
    return f"BYOK not allowed (plan {g.plan} excludes it, no active grace grant)"


def _fallback_warning(g: plans.GateView) -> None:
    """Say so when the org's BYOK setting is now parked and requests use platform credits."""
    if g.soft_fallback:
        render.warn(
            f"org {g.org} is set to {g.provider} (BYOK), which plan {g.plan} does not include: "
            "its requests now fall back to platform credits (the setting is kept, an upgrade "
            f"restores it); to keep BYOK for now, run `byokctl plan grant-grace {g.org} "
            "--days 30`")


def _shorter(org: str, yes: bool) -> Callable[[str, str], bool]:
    """Whether a grace grant may end earlier (old → new): --yes, or the operator's answer."""
    def ask(old: str, new: str) -> bool:
        if not yes and not sys.stdin.isatty():
            return False  # refused by the service, in a message that names old → new
        return confirm(f"Shorten org {org}'s grace grant from {render.when(old)} UTC to "
                       f"{render.when(new)} UTC?", yes)

    return ask


@app.command("set")
def set_(
    org: Org,
    plan: Annotated[str, typer.Argument(metavar="PLAN", help="free, starter, growth or scale.")],
    grace_days: Annotated[int | None, typer.Option(
        "--grace-days", metavar="N",
        help="On a plan without BYOK, let the org keep BYOK for N more days.")] = None,
    yes: Yes = False,
    as_: As = None,
    json_: Json = False,
) -> None:
    """Change an org's plan (platform operator only); BYOK follows the plan.

    A --grace-days grant that would end earlier than the org's current grant asks first
    (--yes confirms; without it and off a terminal it is refused, exit 12).

    \b
    Example: byokctl plan set acme starter --grace-days 30
    """
    with session(as_) as ctx:
        change = plans.set_plan(ctx, org, plan, grace_days, confirm_shorter=_shorter(org, yes))
    _fallback_warning(change.gate)
    b, a = change.before, change.after
    if not change.changed:
        text = f"Org {org} is already on plan {a['plan']}; nothing changed."
    else:
        text = (f"Org {org}: plan {b['plan']} → {a['plan']}" if b["plan"] != a["plan"]
                else f"Org {org}: plan {a['plan']}")
        text += f"; {_gate_line(change.gate)}"
        if b["grace_until"] is not None and b["grace_until"] != a["grace_until"]:
            text += (f" (grace end {render.when(b['grace_until'])} → {render.when(a['grace_until'])}"
                     " UTC)")
        text += "."
    render.emit(json_, change, text)


@app.command("grant-grace")
def grant_grace(
    org: Org,
    days: Annotated[int | None, typer.Option(
        "--days", metavar="N", help="Grace for N days from now (default 30).")] = None,
    until: Annotated[str | None, typer.Option(
        "--until", metavar="DATE", help="Grace until this moment: a date (YYYY-MM-DD, through the "
        "end of that day, UTC) or an ISO date-time (2026-12-31T18:00Z).")] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why, shown and audited.")] = None,
    yes: Yes = False,
    as_: As = None,
    json_: Json = False,
) -> None:
    """Let an org keep BYOK on a plan without it until a date (platform operator only).

    A new grant replaces the current one. One that would end earlier than the current grant
    asks first (--yes confirms; without it and off a terminal it is refused, exit 12).

    \b
    Example: byokctl plan grant-grace acme --until 2026-12-31 --reason "contract renewal"
    Example: byokctl plan grant-grace acme --until 2026-12-15T18:00Z --yes
    """
    with session(as_) as ctx:
        change = plans.grant_grace(ctx, org, days=days, until=until, reason=reason,
                                   confirm_shorter=_shorter(org, yes))
    g = change.gate
    old = change.before["grace_until"]
    text = f"Org {org} may use BYOK until {render.when(g.grace_until)} UTC"
    if old is not None and old != g.grace_until:
        text += (f" (grace end {render.when(old)} → {render.when(g.grace_until)} UTC"
                 + (", earlier than before)" if change.grace_shortened else ")"))
    text += "."
    if g.byok_allowed_by_plan:
        text += f" (Its plan {g.plan} includes BYOK anyway; the grant matters after a downgrade.)"
    render.emit(json_, change, text)


@app.command("revoke-grace")
def revoke_grace(org: Org, as_: As = None, json_: Json = False) -> None:
    """End an org's BYOK grace grant now (platform operator only).

    \b
    Example: byokctl plan revoke-grace acme
    """
    with session(as_) as ctx:
        change = plans.revoke_grace(ctx, org)
    _fallback_warning(change.gate)
    render.emit(json_, change,
                f"Revoked org {org}'s grace grant; {_gate_line(change.gate)}." if change.changed
                else f"Org {org} has no grace grant; nothing changed.")


@app.command("show")
def show(org: Org, as_: As = None, json_: Json = False) -> None:
    """Show an org's plan, grace grant and whether BYOK is allowed.

    \b
    Example: byokctl plan show acme --json
    """
    with session(as_) as ctx:
        g = plans.show(ctx, org)

    def human() -> None:
        render.fields([
            ("org", g.org), ("plan", g.plan),
            ("byok in plan", "yes" if g.byok_allowed_by_plan else "no"),
            ("grace until", f"{render.when(g.grace_until)} UTC" if g.grace_until else None),
            ("grace active", "yes" if g.grace_active else "no"),
            ("grace reason", g.grace_reason),
            ("gate", _gate_line(g)),
            ("provider", g.provider + (" (falling back to platform credits)"
                                       if g.soft_fallback else "")),
        ])

    render.emit(json_, g, human)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="plan")
