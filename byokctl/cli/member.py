"""`member add|list|set-role|remove`."""

from __future__ import annotations

from typing import Annotated

import typer

from byokctl.cli import render
from byokctl.cli.common import As, Json, Org, Yes, confirm, session
from byokctl.errors import Conflict
from byokctl.services import members

app = typer.Typer(help="Add and manage an org's members and their roles.", no_args_is_help=True)

Email = Annotated[str, typer.Argument(metavar="EMAIL", help="The member's email address.")]


def _no_admin_warning(org: str) -> None:
    render.warn(f"org {org} has no admin left; only the platform operator can manage it until "
                f"one is named with `byokctl member set-role {org} EMAIL admin`")


@app.command("add")
def add(
    org: Org,
    email: Email,
    role: Annotated[str, typer.Option("--role", help="admin, staffing or interviewer.")],
    as_: As = None,
    json_: Json = False,
) -> None:
    """Add a member to an org with a role.

    \b
    Example: byokctl member add acme alice@acme.com --role admin
    """
    with session(as_) as ctx:
        m = members.add(ctx, org, email, role)
    render.emit(json_, m, f"Added {m.email} to org {m.org} as {m.role}.")


@app.command("list")
def list_(org: Org, as_: As = None, json_: Json = False) -> None:
    """List an org's members, their roles and personal keys.

    \b
    Example: byokctl member list acme --json
    """
    with session(as_) as ctx:
        items = members.list_members(ctx, org)
    render.emit(json_, items, lambda: render.table(
        ["email", "role", "personal keys", "added"],
        [(m.email, m.role, m.keys, render.when(m.created_at)) for m in items], no_wrap=("added",)))


@app.command("set-role")
def set_role(
    org: Org,
    email: Email,
    role: Annotated[str, typer.Argument(metavar="ROLE", help="admin, staffing or interviewer.")],
    as_: As = None,
    json_: Json = False,
) -> None:
    """Change a member's role.

    \b
    Example: byokctl member set-role acme bob@acme.com staffing
    """
    with session(as_) as ctx:
        change = members.set_role(ctx, org, email, role)
    if change.no_admin_left:
        _no_admin_warning(org)
    render.emit(json_, change,
                f"{change.email} in org {org}: {change.before} → {change.after}." if change.changed
                else f"{change.email} is already {change.after} in org {org}; nothing changed.")


@app.command("remove")
def remove(org: Org, email: Email, yes: Yes = False, as_: As = None, json_: Json = False) -> None:
    """Remove a member from an org; their personal keys are purged with them.

    A member who holds personal keys is removed only once confirmed (--yes, or
    the prompt on a terminal): their secrets are purged and cannot be recovered.

    \b
    Example: byokctl member remove acme bob@acme.com --yes
    """
    with session(as_) as ctx:
        held = members.personal_keys(ctx, org, email)
        if held:
            ids = ", ".join(k["id"] for k in held)
            if not confirm(f"Remove {email} from org {org} and purge their {len(held)} personal "
                           f"key{'s' if len(held) != 1 else ''} ({ids})? The secrets cannot be "
                           "recovered.", yes):
                raise Conflict(f"Removal of {email} from org {org} not confirmed",
                               "nothing was changed")
        gone = members.remove(ctx, org, email, purge_keys=yes or bool(held))
    if gone.no_admin_left:
        _no_admin_warning(org)
    n = len(gone.purged_keys)
    keys = ("no personal keys" if n == 0 else
            f"purged {n} personal key{'s' if n != 1 else ''} "
            f"({', '.join(k['id'] for k in gone.purged_keys)})")
    render.emit(json_, gone, f"Removed {gone.member.email} ({gone.member.role}) from org {org}; "
                f"{keys}.")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="member")
