"""Who is acting on an org, read from the store, held to what `domain.roles` permits them."""

from __future__ import annotations

from typing import NamedTuple

from byokctl.domain import roles
from byokctl.errors import Denied, NotFound
from byokctl.services import rules
from byokctl.services.context import Context


class Actor(NamedTuple):
    name: str
    email: str | None = None  # set when acting as a member
    role: str | None = None

    @property
    def is_operator(self) -> bool:
        return self.email is None


def actor_in(ctx: Context, org: str) -> Actor:
    """The actor for a command on `org`; `--as` must name one of its members."""
    if ctx.as_email is None:
        return Actor(ctx.actor)
    email = rules.email(ctx.as_email)
    return acting_in(ctx, org, email, ctx.store.members.role(org, email))


def acting_in(ctx: Context, org: str, email: str | None, role: str | None) -> Actor:
    """`actor_in` for a caller that has read the acting member's role in `org` (email None:
    the operator; role None: not a member)."""
    if email is None:
        return Actor(ctx.actor)
    if role is None:
        raise Denied(f"{email} is not a member of org {org}", "add them with `byokctl member add`")
    ctx.acting_members.add((org, email))  # its MAC is checked before any write (integrity)
    return Actor(email, email, role)


def require(ctx: Context, org: str, permission: str, fix: str = "") -> Actor:
    """Return the actor if they hold `permission` in `org`, else raise Denied (or NotFound)."""
    org_exists(ctx, org)
    return require_in(ctx, org, permission, fix)


def require_in(ctx: Context, org: str, permission: str, fix: str = "", *,
               actor: Actor | None = None) -> Actor:
    """`require` for a caller that has just read the org (so knows it exists): one query less;
    `actor`: the one `acting_in` gave, for a caller that has read the member's role too."""
    actor = actor or actor_in(ctx, org)
    if actor.is_operator:
        return actor
    if permission == roles.OPERATOR or not roles.permits(actor.role or "", permission):
        raise roles.deny(actor.email or "", actor.role or "", permission, org, fix)
    return actor


def require_operator(ctx: Context, what: str) -> None:
    """For commands with no org scope (platform settings): members are always denied."""
    if ctx.as_email is not None:
        raise Denied(f"{ctx.as_email} may not {what}: it is the platform operator's alone",
                     roles.OPERATOR_FIX)


def org_exists(ctx: Context, org: str) -> None:
    if not ctx.store.orgs.exists(org):
        create = f" or create it with `byokctl org create {org}`" if rules.SLUG_RE.fullmatch(org) else ""
        raise NotFound(f"No org '{org}'", f"see `byokctl org list`{create}", org=org)
