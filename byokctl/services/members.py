"""An org's members and their roles: add, list, change role, remove (purging personal keys).

The platform operator may leave an org without an admin (they can always act on it); a
member acting with `--as` may not, so no admin can lock the org out of its own management.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from byokctl import clock
from byokctl.errors import Conflict, NotFound
from byokctl.services import audit, rules
from byokctl.services.context import Context
from byokctl.services.permissions import Actor, require, require_operator

if TYPE_CHECKING:
    from byokctl.store import Row


@dataclass
class Member:
    org: str
    email: str
    role: str
    created_at: str
    keys: int = 0  # personal keys stored for this member

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class RoleChange:
    org: str
    email: str
    before: str
    after: str
    no_admin_left: bool = False

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def to_json(self) -> dict:
        return {"org": self.org, "email": self.email, "changed": self.changed,
                "before": self.before, "after": self.after, "no_admin_left": self.no_admin_left}


@dataclass
class Removal:
    member: Member
    purged_keys: list[dict] = field(default_factory=list)  # id, provider, hint, fingerprint
    no_admin_left: bool = False

    def to_json(self) -> dict:
        return {"org": self.member.org, "email": self.member.email, "role": self.member.role,
                "removed": True, "purged_keys": self.purged_keys,
                "no_admin_left": self.no_admin_left}


def _get(ctx: Context, org: str, email: str) -> Member:
    row = ctx.store.members.get(org, email)
    if row is None:
        raise NotFound(f"{email} is not a member of org {org}", f"see `byokctl member list {org}`")
    return _member(row)


def _member(row: Row) -> Member:
    return Member(row["org"], row["email"], row["role"], row["created_at"], row["keys"])


def _admins(ctx: Context, org: str) -> int:
    return ctx.store.members.count_admins(org)


def _guard_last_admin(ctx: Context, actor: Actor, org: str, target: Member, doing: str) -> bool:
    """True when the change leaves `org` without an admin; refused for a member acting `--as`."""
    if target.role != "admin" or _admins(ctx, org) > 1:
        return False
    if not actor.is_operator:
        raise Conflict(
            f"{doing} {target.email} would leave org {org} without an admin", "make another member "
            f"admin first with `byokctl member set-role {org} EMAIL admin`"
        )
    return True


def add(ctx: Context, org: str, email: str, role: str) -> Member:
    from byokctl.services import integrity  # hashes and row MACs: writes only

    email = rules.email(email)
    rules.choice(role, rules.ROLES, "role")
    require(ctx, org, rules.ORG_MANAGE)
    with ctx.write():
        if ctx.store.members.exists(org, email):
            raise Conflict(f"{email} is already a member of org {org}", "change their role with "
                           f"`byokctl member set-role {org} {email} ROLE`")
        ctx.store.members.insert(org, email, role, clock.stamp())
        integrity.seal(ctx, "members", (org, email))
        audit.record(ctx, "member.add", org=org, target=email, after={"role": role})
    return _get(ctx, org, email)


def list_members(ctx: Context, org: str) -> list[Member]:
    require(ctx, org, rules.ORG_VIEW)
    return [_member(r) for r in ctx.store.members.for_org(org)]


def _count_keys(keys: list[dict]) -> str:
    n = len(keys)
    return f"{n} personal key{'' if n == 1 else 's'} ({', '.join(k['id'] for k in keys)})"


def all_roles(ctx: Context) -> Iterator[tuple[str, str, str]]:
    """Every member of every org as `(org, email, role)`, by org then email, as the store reads
    them (`export`: one walk instead of a query per org). The operator's view."""
    require_operator(ctx, "list the members of every org")
    return ctx.store.members.all_roles()


def set_role(ctx: Context, org: str, email: str, role: str) -> RoleChange:
    from byokctl.services import integrity  # hashes and row MACs: writes only

    email = rules.email(email)
    rules.choice(role, rules.ROLES, "role")
    actor = require(ctx, org, rules.ORG_MANAGE)
    with ctx.write():
        member = _get(ctx, org, email)
        change = RoleChange(org, email, member.role, role)
        if not change.changed:
            return change
        if role != "admin":
            change.no_admin_left = _guard_last_admin(ctx, actor, org, member, "Demoting")
        integrity.update_member(ctx, org, email, {"role": role})
        audit.record(ctx, "member.set_role", org=org, target=email,
                     before={"role": member.role}, after={"role": role})
    return change


def personal_keys(ctx: Context, org: str, email: str) -> list[dict]:
    """The personal keys `remove` would purge with the member (public columns), once the actor
    may remove them: what `member remove` asks to confirm."""
    email = rules.email(email)
    require(ctx, org, rules.ORG_MANAGE)
    _get(ctx, org, email)
    return [dict(r) for r in ctx.store.keys.of_member(org, email)]


def remove(ctx: Context, org: str, email: str, *, purge_keys: bool = True) -> Removal:
    """Remove a member; the foreign key cascade purges their personal keys (secure_delete).
    With `purge_keys=False` a member who holds personal keys is kept (Conflict): the caller
    confirmed the removal of a member without keys, and one may have been added since."""
    email = rules.email(email)
    actor = require(ctx, org, rules.ORG_MANAGE)
    with ctx.write():
        member = _get(ctx, org, email)
        no_admin_left = _guard_last_admin(ctx, actor, org, member, "Removing")
        keys = [dict(r) for r in ctx.store.keys.of_member(org, email)]
        if keys and not purge_keys:
            raise Conflict(f"{email} holds {_count_keys(keys)} in org {org}, which removing them "
                           "purges", f"pass --yes to remove them with their keys: `byokctl member "
                           f"remove {org} {email} --yes`")
        ctx.store.members.delete(org, email)
        audit.record(ctx, "member.remove", org=org, target=email,
                     before={"role": member.role, "keys": keys}, after=None)
    if keys:
        ctx.store.purge_wal()  # the cascade deleted ciphertext: get its old pages out of the WAL too
    return Removal(member, keys, no_admin_left)
