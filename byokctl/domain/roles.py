"""Roles and what they permit (SPEC §1): the operator may do anything, a member what their role allows."""

from __future__ import annotations

from byokctl.errors import Denied

ROLES = ("admin", "staffing", "interviewer")
ORG_VIEW, ORG_MANAGE, KEY_OWN = "org:view", "org:manage", "key:own"
OPERATOR = "operator"  # plans, grace, credits, budgets, platform settings: never a member's
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset({ORG_VIEW, ORG_MANAGE, KEY_OWN}),
    "staffing": frozenset({ORG_VIEW, KEY_OWN}),
    "interviewer": frozenset({KEY_OWN}),
}
PERMISSION_WORDS = {
    ORG_VIEW: "view",
    ORG_MANAGE: "manage",
    KEY_OWN: "use",
    OPERATOR: "change operator settings of",
}


def permits(role: str, permission: str) -> bool:
    """Does a member with `role` hold `permission`? Never OPERATOR, never for an unknown role."""
    return permission in ROLE_PERMISSIONS.get(role, frozenset())


# What only the platform operator may do: no member, an org admin included, can be asked.
OPERATOR_FIX = "the platform operator runs it, without --as"


def deny(email: str, role: str, permission: str, org: str, fix: str = "") -> Denied:
    verb = PERMISSION_WORDS.get(permission, permission)
    if permission == OPERATOR:
        return Denied(f"{email} ({role}) may not do this: it is the platform operator's alone",
                      fix or OPERATOR_FIX)
    return Denied(f"{email} ({role}) may not {verb} org {org}",
                  fix or "ask an org admin or the platform operator")
