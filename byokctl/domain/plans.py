"""Plans, grace grants and the BYOK gate: the one `gate()` every caller asks (SPEC §1, §3.2).

An unknown plan in the store fails closed (SPEC §3.7): its gate never holds, grace or not,
and whatever would act on it raises `unknown_plan()`, a PlanGate (exit 5).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

from byokctl.domain import BYOK_PLANS, DEFAULT_GRACE_DAYS, PLANS  # noqa: F401 - named here too
from byokctl.errors import PlanGate


class Gate(NamedTuple):
    plan: str
    allowed: bool  # the gate holds: a known plan allows BYOK or a grace grant is active
    grace_until: str | None
    grace_active: bool  # the grant has not ended (whatever the plan)
    by_plan: bool = False  # the plan itself includes BYOK
    known: bool = True  # False: the plan in the store is not one byokctl knows

    def to_json(self) -> dict:
        return {"plan": self.plan, "allowed": self.allowed, "grace_until": self.grace_until}


def grace_active(grace_until: str | None, now: datetime) -> bool:
    """A grant holds until its end, exclusive."""
    if not grace_until:
        return False
    return datetime.fromisoformat(grace_until.replace("Z", "+00:00")).astimezone(UTC) > now


def gate(plan: str, grace_until: str | None, now: datetime) -> Gate:
    """Whether BYOK is usable for an org on `plan` with a grant ending `grace_until`, at `now`."""
    known = plan in PLANS
    by_plan = plan in BYOK_PLANS
    grace = grace_active(grace_until, now)
    return Gate(plan, known and (by_plan or grace), grace_until, grace, by_plan, known)


def unknown_plan(org: str, plan: str) -> PlanGate:
    """The one error for a plan in the store that byokctl does not know."""
    return PlanGate(f"Org {org} has unknown plan '{plan}'", "set a known plan with "
                    f"`byokctl plan set {org} PLAN`")


def refusal(org: str, g: Gate) -> PlanGate | None:
    """Why a BYOK provider may not be selected now (`org set-provider`, `apply`); None if it may."""
    if not g.known:
        return unknown_plan(org, g.plan)
    if g.allowed:
        return None
    return PlanGate(f"BYOK is not included in org {org}'s plan ({g.plan})", "upgrade it with "
                    f"`byokctl plan set {org} growth` or grant grace with `byokctl plan grant-grace "
                    f"{org}`")
