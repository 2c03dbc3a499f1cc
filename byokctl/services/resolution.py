"""Gather the facts the resolution chain needs from the store, and run it."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from byokctl import clock
from byokctl.providers import catalog
from byokctl.services import rules
from byokctl.services.context import Context

if TYPE_CHECKING:
    from datetime import datetime

    from byokctl.domain.resolution import Decision, Facts, KeyRef
    from byokctl.services.orgs import Org
    from byokctl.store import Row

PLATFORM_DEFAULT_PROVIDER = "anthropic"


def _ref(row: Row | None) -> KeyRef | None:
    from byokctl.domain.resolution import KeyRef

    return None if row is None else KeyRef(row["id"], row["scope"], row["provider"],
                                           row["fingerprint"], row["status"])


def platform_default(ctx: Context) -> tuple[str, str, str | None]:
    """(provider, model id, base_url) the platform uses for orgs in platform mode."""
    stored = ctx.store.metas("platform_provider", "platform_model", "platform_base_url")
    provider = stored["platform_provider"] or PLATFORM_DEFAULT_PROVIDER
    model = stored["platform_model"]
    if model is None:
        model = catalog.load().pinned(provider, None).id
    return provider, model, stored["platform_base_url"]


def month_start_iso(now: datetime | None = None) -> str:
    """The start of the month of `now` (default: the clock's)."""
    now = now or clock.now()
    return clock.iso(now.replace(day=1, hour=0, minute=0, second=0, microsecond=0))


def facts(ctx: Context, o: Org, member: str | None, at: datetime | None = None) -> Facts:
    """What the chain decides on, as of `at` (default now): the gate and grace then, with the
    keys and settings stored today (a month-to-date budget counts that month's spend so far)."""
    from byokctl.domain.resolution import Facts

    now = at or clock.now()
    pp, pm, pu = platform_default(ctx)
    provider = o.provider
    slug = o.slug
    member_key = org_key = None
    approved = True
    if provider in catalog.PROVIDERS:
        if member:
            member_key = _ref(ctx.store.keys.member_key(slug, member, provider))
            if member_key is not None and o.base_url is not None:
                from byokctl.services.endpoints import is_approved

                approved = is_approved(ctx.store, slug, member, provider, o.base_url)
        org_key = _ref(ctx.store.keys.org_key(slug, provider))
    spent = 0.0
    if o.budget_monthly_usd is not None:
        spent = ctx.store.usage.byok_spent_since(slug, month_start_iso(now))
    return Facts(
        org=slug, plan=o.plan, credits=o.credits, provider=provider,
        model=o.model, base_url=o.base_url, fallback=o.fallback,
        grace_until=o.grace_until, budget_monthly_usd=o.budget_monthly_usd,
        byok_cost_mtd=spent, member=member, member_key=member_key, org_key=org_key,
        platform_provider=pp, platform_model=pm, platform_base_url=pu,
        platform_key=_ref(ctx.store.keys.platform_key(pp)),
        now=now, member_key_approved=approved,
    )


def decide(ctx: Context, org: Org, member: str | None, at: datetime | None = None) -> Decision:
    from byokctl.domain.resolution import resolve

    return resolve(facts(ctx, org, member, at), catalog.load())


def resolve_for(ctx: Context, org: str, at: datetime | None = None) -> tuple[Decision, Facts]:
    """The decision for a request by the current actor on `org` (no call is made), as of `at`
    (default now), and the facts it was made from (`ask` needs them again if the provider
    refuses the key)."""
    from byokctl.domain.resolution import resolve
    from byokctl.services.orgs import get
    from byokctl.services.permissions import require_in

    o = get(ctx, org)  # an unknown org is NotFound before any membership is looked at
    actor = require_in(ctx, org, rules.KEY_OWN)
    f = facts(ctx, o, actor.email, at)
    return resolve(f, catalog.load()), f
