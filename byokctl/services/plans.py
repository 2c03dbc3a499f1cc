"""Plans and BYOK grace grants: the platform operator's levers on the BYOK gate.

A downgrade never touches the org's provider setting: while the gate is closed requests
fall back to platform credits, and an upgrade (or a grace grant) restores BYOK as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from byokctl import clock
from byokctl.domain.plans import gate
from byokctl.errors import Conflict
from byokctl.services import audit, rules
from byokctl.services.context import Context
from byokctl.services.orgs import Org, get
from byokctl.services.permissions import require

if TYPE_CHECKING:
    from byokctl.store import Row

MAX_GRACE_DAYS = 3650  # longer than this is not grace: upgrade the plan instead


@dataclass
class GateView:
    """The org's plan, its grace grant and whether BYOK is usable: `plan show`."""

    org: str
    plan: str
    provider: str
    byok_allowed_by_plan: bool
    grace_until: str | None
    grace_reason: str | None
    grace_active: bool
    byok_allowed: bool  # the gate holds (never on a plan byokctl does not know)

    @property
    def soft_fallback(self) -> bool:
        """The org chose BYOK but the gate is closed: requests run on platform credits."""
        return self.provider in rules.BYOK_PROVIDERS and not self.byok_allowed

    def to_json(self) -> dict:
        return {
            "org": self.org,
            "plan": self.plan,
            "provider": self.provider,
            "byok_allowed_by_plan": self.byok_allowed_by_plan,
            "grace_until": self.grace_until,
            "grace_reason": self.grace_reason,
            "grace_active": self.grace_active,
            "byok_allowed": self.byok_allowed,
            "soft_fallback": self.soft_fallback,
            "gate": {"plan": self.plan, "allowed": self.byok_allowed,
                     "grace_until": self.grace_until},
        }


def _view(o: Org) -> GateView:
    g = gate(o.plan, o.grace_until, clock.now())
    return GateView(o.slug, o.plan, o.provider, g.by_plan, o.grace_until, o.grace_reason,
                    g.grace_active, g.allowed)


def _state(o: Org) -> dict:
    return {"plan": o.plan, "grace_until": o.grace_until, "grace_reason": o.grace_reason}


@dataclass
class PlanChange:
    """Before and after of a plan or grace command, and the gate it leaves."""

    org: str
    before: dict
    after: dict
    gate: GateView

    @property
    def changed(self) -> bool:
        return self.before != self.after

    @property
    def grace_shortened(self) -> bool:
        """The grant now ends earlier than it did (confirmed with --yes)."""
        old, new = self.before.get("grace_until"), self.after.get("grace_until")
        return old is not None and new is not None and clock.parse(new) < clock.parse(old)

    def to_json(self) -> dict:
        return {"org": self.org, "changed": self.changed, "before": self.before,
                "after": self.after, "previous_grace_until": self.before.get("grace_until"),
                "grace_shortened": self.grace_shortened,
                **{k: v for k, v in self.gate.to_json().items() if k not in ("org", "plan")}}


def _apply(ctx: Context, slug: str, action: str, before: Org, after: dict) -> PlanChange:
    """Write `after` (plan and grace columns) if it differs, audited; inside one transaction."""
    from byokctl.services import integrity  # hashes and row MACs: writes only

    b = _state(before)
    if after != b:
        def change(row: Row) -> dict:
            if {k: row[k] for k in b} != b:
                raise Conflict(f"Org {slug}'s plan changed meanwhile", "run the command again")
            return {**after, "updated_at": clock.stamp()}

        with ctx.write():
            if integrity.update_org(ctx, slug, change) is None:
                get(ctx, slug)  # deleted meanwhile: the one NotFound message
            audit.record(ctx, action, org=slug, target=slug, before=b, after=after)
    return PlanChange(slug, b, after, _view(get(ctx, slug)))


def grace_days(days: int, flag: str = "--days") -> int:
    rules.positive_int(days, flag)
    if days > MAX_GRACE_DAYS:
        raise rules.UsageError(f"{flag} must be at most {MAX_GRACE_DAYS}", "for longer, upgrade "
                               "the plan instead")
    return days


def grace_end(days: int | None, until: str | None) -> datetime:
    """When a grant given as `--days N` or `--until DATE` ends (a bare date: its last second)."""
    if days is not None and until is not None:
        raise rules.UsageError("Give --days N or --until DATE, not both")
    if until is None:
        return rules.days_from_now(grace_days(rules.DEFAULT_GRACE_DAYS if days is None else days))
    end = rules.parse_when(until, end_of_day=True)
    if end <= clock.now():
        raise rules.UsageError(f"--until {until} is in the past", "give a future date (YYYY-MM-DD)")
    if end > rules.days_from_now(MAX_GRACE_DAYS + 1):  # a bare date ends at its last second
        raise rules.UsageError(f"--until {until} is more than {MAX_GRACE_DAYS} days away", "grace is "
                               "for a transition: give a nearer date, or upgrade the plan instead")
    return end


def set_plan(ctx: Context, slug: str, plan: str, grace_days_: int | None = None,
             confirm_shorter: Callable[[str, str], bool] = lambda _old, _new: False) -> PlanChange:
    """Change the plan; with `grace_days_`, a downgrade keeps BYOK for that many days (a grant
    that would end earlier than the current one needs `confirm_shorter`, as for grant_grace)."""
    rules.choice(plan, rules.PLANS, "plan")
    if grace_days_ is not None:
        grace_days(grace_days_, "--grace-days")
        if plan in rules.BYOK_PLANS:
            raise rules.UsageError("--grace-days applies only to plans without BYOK", "plan "
                                   f"{plan} includes it")
    require(ctx, slug, rules.OPERATOR)
    org = get(ctx, slug)
    after = {**_state(org), "plan": plan}
    if grace_days_ is not None:
        end = rules.days_from_now(grace_days_)
        _confirm_shorter(slug, org.grace_until, end, confirm_shorter, "--grace-days")
        after["grace_until"] = clock.iso(end)
        after["grace_reason"] = f"plan changed from {org.plan} to {plan}"
    return _apply(ctx, slug, "plan.set", org, after)


def grant_grace(ctx: Context, slug: str, *, days: int | None = None, until: str | None = None,
                reason: str | None = None,
                confirm_shorter: Callable[[str, str], bool] = lambda _old, _new: False) -> PlanChange:
    """Let the org keep BYOK on a plan without it until a date (default: 30 days from now).

    A grant never ends earlier silently: moving an active grant's end earlier needs
    `confirm_shorter(old, new)` to agree (Conflict otherwise; nothing is written)."""
    end = grace_end(days, until)
    if reason:
        rules.plain_text(reason, "The reason")
    require(ctx, slug, rules.OPERATOR)
    org = get(ctx, slug)
    _confirm_shorter(slug, org.grace_until, end, confirm_shorter)
    after = {**_state(org), "grace_until": clock.iso(end), "grace_reason": reason or None}
    return _apply(ctx, slug, "plan.grant_grace", org, after)


def shortens(current: str | None, end: datetime) -> bool:
    """True when a grant ending `current` would end earlier at `end`."""
    return current is not None and end < clock.parse(current)


def _confirm_shorter(slug: str, current: str | None, end: datetime,
                     confirm: Callable[[str, str], bool], flag: str = "") -> None:
    """A grace grant never ends earlier silently: Conflict unless `confirm(old, new)` agrees."""
    new = clock.iso(end)
    if shortens(current, end) and not confirm(current, new):
        raise Conflict(f"Org {slug}'s grace grant would end earlier ({current} → {new})",
                       f"pass --yes to shorten it{' with ' + flag if flag else ''}; nothing was "
                       "changed")


def revoke_grace(ctx: Context, slug: str) -> PlanChange:
    require(ctx, slug, rules.OPERATOR)
    org = get(ctx, slug)
    after = {**_state(org), "grace_until": None, "grace_reason": None}
    return _apply(ctx, slug, "plan.revoke_grace", org, after)


def show(ctx: Context, slug: str) -> GateView:
    require(ctx, slug, rules.ORG_VIEW)
    return _view(get(ctx, slug))
