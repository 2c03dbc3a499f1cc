"""Organizations: create, list, show (with the effective mode), delete, provider setting, budget."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from byokctl import clock
from byokctl.errors import Conflict
from byokctl.providers import catalog
from byokctl.services import audit, rules
from byokctl.services.context import Context
from byokctl.services.permissions import org_exists, require

if TYPE_CHECKING:
    from byokctl.domain.resolution import Decision
    from byokctl.store import Row


@dataclass
class Org:
    slug: str
    name: str
    plan: str
    credits: int
    provider: str
    model: str | None
    base_url: str | None
    fallback: str
    budget_monthly_usd: float | None
    grace_until: str | None
    grace_reason: str | None
    created_at: str
    updated_at: str

    @classmethod
    def from_row(cls, row: Row) -> Org:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})

    def setting(self) -> dict:
        """The provider setting, as audited before/after."""
        return {"provider": self.provider, "model": self.model, "base_url": self.base_url,
                "fallback": self.fallback}

    def to_json(self) -> dict:
        return asdict(self)


def get(ctx: Context, slug: str) -> Org:
    row = ctx.store.orgs.get(slug)
    if row is None:
        org_exists(ctx, slug)  # raises the one NotFound message
    return Org.from_row(row)


def create(ctx: Context, slug: str, *, name: str | None, plan: str | None = None,
           credits: int | None = None, if_not_exists: bool = False,
           if_same: bool = False) -> tuple[Org, bool]:
    """Create an org (plan free and no credits unless given); returns (org, created). With
    `if_not_exists`, an existing org is kept; with `if_same` too, only if what was given (None:
    not given) matches it, else Conflict naming each difference (`differences`)."""
    from byokctl.services import integrity  # hashes and row MACs: writes only

    asked = {"name": name, "plan": plan, "credits": credits}
    plan = "free" if plan is None else plan
    credits = 0 if credits is None else credits
    rules.slug(slug)
    rules.choice(plan, rules.PLANS, "plan")
    if credits < 0:
        raise rules.UsageError(f"--credits must be zero or more, not {credits}")
    if credits > rules.MAX_CREDITS_ADD:  # as for one `credits add`
        raise rules.UsageError(f"--credits must be at most {rules.MAX_CREDITS_ADD:,}, "
                               f"not {credits:,}")
    name = slug if name is None else _name(name)  # as `rename` stores it, so apply converges
    if ctx.as_email is not None:
        from byokctl.domain.roles import OPERATOR_FIX

        raise rules.Denied(f"{ctx.as_email} may not create orgs: it is the platform operator's alone",
                           OPERATOR_FIX)
    if ctx.store.orgs.exists(slug):
        if if_not_exists:
            return _existing(ctx, slug, asked if if_same else None), False
        raise Conflict(f"Org '{slug}' already exists", "use --if-not-exists to accept that")
    now = clock.stamp()
    with ctx.write():
        if ctx.store.orgs.exists(slug):
            if if_not_exists:
                return _existing(ctx, slug, asked if if_same else None), False
            raise Conflict(f"Org '{slug}' already exists", "use --if-not-exists to accept that")
        ctx.store.orgs.insert(slug, name, plan, credits, now)
        integrity.seal(ctx, "orgs", (slug,))
        org = get(ctx, slug)
        audit.record(ctx, "org.create", org=slug, target=slug,
                     after={"name": org.name, "plan": plan, "credits": credits})
    return org, True


def _existing(ctx: Context, slug: str, asked: dict | None) -> Org:
    """The org that exists, if it is as `asked` (None: whatever it is); else Conflict."""
    org = get(ctx, slug)
    found = [] if asked is None else differences(ctx, org, **asked)
    if found:
        raise Conflict(f"Org {slug} already exists with other settings than given: "
                       + "; ".join(d for d, _ in found),
                       "; ".join(dict.fromkeys(f for _, f in found)) + ", or drop the options "
                       "that differ", differences=[d for d, _ in found])
    return org


def differences(ctx: Context, org: Org, *, name: str | None = None, plan: str | None = None,
                credits: int | None = None) -> list[tuple[str, str]]:
    """How `org create` options (None: not given) differ from the existing org, each with its
    fix. `credits` is a starting balance, so it is compared with the balance the org was
    created with (its `org.create` audit entry), not today's."""
    found = []
    if name is not None and _name(name) != org.name:
        found.append((f"name is '{org.name}', not '{_name(name)}'", "rename it with an apply file "
                      f"(name = \"...\" under [orgs.{org.slug}])"))
    if plan is not None and plan != org.plan:
        found.append((f"plan is {org.plan}, not {plan}",
                      f"change it with `byokctl plan set {org.slug} {plan}`"))
    if credits is not None:
        started = _starting_credits(ctx, org.slug)
        if started is not None and started != credits:
            found.append((f"it started with {started} credits, not {credits} (balance now "
                          f"{org.credits})", f"add credits with `byokctl credits add {org.slug} N`"))
    return found


def _starting_credits(ctx: Context, slug: str) -> int | None:
    from byokctl.services.audit import log

    created = log(ctx, org=slug, action="org.create", limit=1)
    after = created[0].after if created else None
    value = after.get("credits") if isinstance(after, dict) else None
    return value if isinstance(value, int) else None


ORG_LISTERS = ("admin", "staffing")  # the roles whose orgs a member's `org list` shows


MAX_WITHIN_DAYS = 3650  # as for a grace grant's length


def list_orgs(ctx: Context, *, model: str | None = None,
              grace_ending_within: int | None = None) -> Iterator[Org]:
    """The orgs the actor may see, by slug, one at a time as the store reads them (the store
    must stay open until it is exhausted). `model`: only those pinned to it (alias or id);
    `grace_ending_within`: only those whose active grace grant ends within that many days."""
    if grace_ending_within is not None:
        rules.positive_int(grace_ending_within, "--grace-ending-within")
        if grace_ending_within > MAX_WITHIN_DAYS:
            raise rules.UsageError(f"--grace-ending-within must be at most {MAX_WITHIN_DAYS} days")
    if ctx.as_email is not None:
        rows = ctx.store.orgs.for_member(rules.email(ctx.as_email), ORG_LISTERS)
    else:
        rows = ctx.store.orgs.all()
    found: Iterator[Org] = map(Org.from_row, rows)
    if model is not None:
        from byokctl.services.models import on_model

        found = on_model(found, model)
    if grace_ending_within is not None:
        found = _grace_ending(found, clock.now(), grace_ending_within)
    return found


def _grace_ending(found: Iterator[Org], now: datetime, days: int) -> Iterator[Org]:
    """The orgs whose grace grant is active at `now` and ends within `days` days of it."""
    horizon = now + timedelta(days=days)
    for o in found:
        if o.grace_until and now < clock.parse(o.grace_until) <= horizon:
            yield o


@dataclass
class OrgView:
    org: Org
    decision: Decision
    members: int
    keys: int
    at: datetime  # the moment the effective mode is worked out for (`--at`, else now)
    warnings: list[str] = field(default_factory=list)  # the decision's, and the model's

    def to_json(self) -> dict:
        d = self.decision
        return {
            "at": clock.iso(self.at),
            **self.org.to_json(),
            "effective_mode": d.mode,
            "effective_provider": d.provider,
            "effective_model": d.model,
            "fallback_reason": d.fallback_reason,
            "grace_active": d.gate.grace_active,
            "members": self.members,
            "keys": self.keys,
            "reasons": list(d.reasons),
            "warnings": self.warnings,
        }


def show(ctx: Context, slug: str, at: datetime | None = None) -> OrgView:
    """The org and its effective mode as of `at` (default now): the gate, grace and fallback
    then, with today's keys and settings."""
    from byokctl.services.resolution import decide

    actor = require(ctx, slug, rules.ORG_VIEW)
    org = get(ctx, slug)
    at = at or clock.now()
    decision = decide(ctx, org, actor.email, at=at)
    members = ctx.store.members.count_for_org(slug)
    keys = ctx.store.keys.count_for_org(slug)
    return OrgView(org, decision, members, keys, at, list(decision.warnings))


def delete(ctx: Context, slug: str) -> Org:
    """Delete an org with its members, keys (purged) and usage; the audit log keeps its history."""
    if ctx.as_email is not None:
        require(ctx, slug, rules.OPERATOR)
    org = get(ctx, slug)
    with ctx.write():
        nkeys = ctx.store.keys.count_for_org(slug)
        # Its reservations go too: calls in flight settle without their org, and must not hold
        # back a new org of the same slug.
        ctx.store.orgs.delete_with_dependents(slug)  # usage, reservations; cascades members, keys
        audit.record(ctx, "org.delete", org=slug, target=slug,
                     before={**org.setting(), "plan": org.plan, "credits": org.credits,
                             "keys": nkeys})
    if nkeys:
        ctx.store.purge_wal()  # the cascade deleted ciphertext: get its old pages out of the WAL too
    return org


@dataclass
class ProviderChange:
    org: str
    before: dict
    after: dict
    warnings: list[str] = field(default_factory=list)  # a base_url corrected, a model retiring

    @property
    def changed(self) -> bool:
        return self.before != self.after


def plan_provider_change(ctx: Context, slug: str, provider: str, *, model: str | None,
                         base_url: str | None, fallback: str | None,
                         allow_insecure: bool = False) -> ProviderChange:
    """Validate a provider switch (permission, plan gate, model) without writing anything."""
    rules.choice(provider, rules.PROVIDER_SETTINGS, "provider")
    require(ctx, slug, rules.ORG_MANAGE)
    org = get(ctx, slug)
    if fallback is not None:
        rules.choice(fallback, rules.FALLBACKS, "fallback policy")
    warnings: list[str] = []
    if base_url is not None and provider in rules.BYOK_PROVIDERS:
        base_url, corrected = rules.provider_base_url(provider, base_url, allow_insecure=allow_insecure)
        warnings += [corrected] if corrected else []
    elif base_url is not None:
        base_url = rules.base_url(base_url, allow_insecure=allow_insecure)
    after = {"provider": provider, "model": None, "base_url": None,
             "fallback": fallback or org.fallback}
    notes: list[str] = []
    if provider == "platform":
        if model is not None or base_url is not None:
            raise rules.UsageError(
                "A model and base URL do not apply to platform mode", "the platform default "
                "is set with `byokctl platform set-default`"
            )
    else:
        from byokctl.domain import plans  # imported here: `org list` never needs the gate

        refused = plans.refusal(slug, plans.gate(org.plan, org.grace_until, clock.now()))
        if refused is not None:
            raise refused
        from byokctl.services.models import choose

        keep_model = org.model if org.provider == provider and model is None else model
        name = keep_model or catalog.load().info[provider]["default_model"]
        current = org.model if org.provider == provider else None
        chosen, notes = choose(provider, name, f"org {slug}'s model", current=current)
        after["model"] = chosen.id
        keep_url = org.base_url if org.provider == provider and base_url is None else base_url
        after["base_url"] = keep_url
    return ProviderChange(slug, org.setting(), after, warnings + notes)


def set_provider(ctx: Context, change: ProviderChange,
                 confirm: Callable[[ProviderChange], bool]) -> ProviderChange:
    """Apply a validated change after `confirm` agrees; Conflict when it does not."""
    from byokctl.services import integrity  # hashes and row MACs: writes only

    if not change.changed:
        return change
    if not confirm(change):
        raise Conflict(f"Provider change for org {change.org} not confirmed", "nothing was changed")

    def switch(row: Row) -> dict:
        if {k: row[k] for k in change.before} != change.before:
            raise Conflict(f"Org {change.org}'s provider setting changed meanwhile", "run the "
                           "command again")
        return {**change.after, "updated_at": clock.stamp()}

    with ctx.write():
        if integrity.update_org(ctx, change.org, switch) is None:
            get(ctx, change.org)  # raises the one NotFound message
        audit.record(ctx, "org.set_provider", org=change.org, target=change.org,
                     before=change.before, after=change.after)
        _owner_approves(ctx, change)
    return change


def _owner_approves(ctx: Context, change: ProviderChange) -> None:
    """A member who points the org at a base_url has approved it for their own personal key
    (SPEC §1); everyone else's personal key needs its owner's approval before it goes there."""
    a, b = change.after, change.before
    if ctx.as_email is None or a["base_url"] is None or a["provider"] not in rules.BYOK_PROVIDERS:
        return
    if a["base_url"] == b["base_url"] and a["provider"] == b["provider"]:
        return  # kept, not set by this actor: it approves nothing
    from byokctl.services import endpoints

    endpoints.grant(ctx, change.org, rules.email(ctx.as_email), a["provider"], a["base_url"],
                    approved_as=endpoints.OWNER)


def set_budget(ctx: Context, slug: str, monthly_usd: float | None) -> tuple[float | None, float | None]:
    """Set (or clear, with None) the org's monthly BYOK budget; returns (before, after)."""
    from byokctl.services import integrity  # hashes and row MACs: writes only

    require(ctx, slug, rules.OPERATOR)
    if monthly_usd is not None and not monthly_usd > 0:
        raise rules.UsageError(f"The monthly budget must be a positive amount, not {monthly_usd:g}")
    if monthly_usd is not None and not monthly_usd < MAX_BUDGET_USD:
        raise rules.UsageError(f"The monthly budget must be below {MAX_BUDGET_USD:,.0f} (USD a month), "
                               f"not {monthly_usd:g}")
    org = get(ctx, slug)
    if org.budget_monthly_usd == monthly_usd:
        return org.budget_monthly_usd, monthly_usd
    with ctx.write():
        integrity.update_org(ctx, slug, {"budget_monthly_usd": monthly_usd,
                                         "updated_at": clock.stamp()})
        audit.record(ctx, "org.set_budget", org=slug, target=slug,
                     before={"budget_monthly_usd": org.budget_monthly_usd},
                     after={"budget_monthly_usd": monthly_usd})
    return org.budget_monthly_usd, monthly_usd


MAX_NAME = 200
MAX_BUDGET_USD = 1e12  # as for credit amounts: a larger budget is a typo, not a budget


def _name(name: str) -> str:
    name = rules.plain_text(name, "The org name").strip()
    if not name or len(name) > MAX_NAME:
        raise rules.UsageError(f"An org name must be 1-{MAX_NAME} characters, not {len(name)}")
    return name


def rename(ctx: Context, slug: str, name: str) -> tuple[str, str]:
    """Change an org's display name (the slug stays); returns (before, after). Audited."""
    from byokctl.services import integrity  # hashes and row MACs: writes only

    require(ctx, slug, rules.ORG_MANAGE)
    name = _name(name)
    org = get(ctx, slug)
    if org.name == name:
        return org.name, name
    with ctx.write():
        integrity.update_org(ctx, slug, {"name": name, "updated_at": clock.stamp()})
        audit.record(ctx, "org.rename", org=slug, target=slug, before={"name": org.name},
                     after={"name": name})
    return org.name, name
