"""Gather the facts the resolution chain needs from the store, and run it."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from byokctl import clock
from byokctl.providers import catalog
from byokctl.services import rules
from byokctl.services.context import Context
from byokctl.vault.rowmac import PLATFORM_MAC, PLATFORM_META

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    from byokctl.domain.resolution import Decision, Facts, KeyRef
    from byokctl.services.orgs import Org
    from byokctl.store import Row
    from byokctl.store.requests import RequestRows

PLATFORM_DEFAULT_PROVIDER = "anthropic"
PLATFORM_RECORD = (*PLATFORM_META, PLATFORM_MAC)  # the platform settings and their MAC


def _ref(row: Row | None) -> KeyRef | None:
    from byokctl.domain.resolution import KeyRef

    return None if row is None else KeyRef(row["id"], row["scope"], row["provider"],
                                           row["fingerprint"], row["status"])


def _platform(stored: Mapping[str, str | None]) -> tuple[str, str, str | None]:
    provider = stored["platform_provider"] or PLATFORM_DEFAULT_PROVIDER
    model = stored["platform_model"]
    if model is None:
        model = catalog.load().pinned(provider, None).id
    return provider, model, stored["platform_base_url"]


def platform_default(ctx: Context) -> tuple[str, str, str | None]:
    """(provider, model id, base_url) the platform uses for orgs in platform mode."""
    return _platform(ctx.store.metas("platform_provider", "platform_model", "platform_base_url"))


def month_start_iso(now: datetime | None = None) -> str:
    """The start of the month of `now` (default: the clock's)."""
    now = now or clock.now()
    return clock.iso(now.replace(day=1, hour=0, minute=0, second=0, microsecond=0))


def facts(ctx: Context, o: Org, member: str | None, at: datetime | None = None,
          seen: RequestRows | None = None) -> Facts:
    """What the chain decides on, as of `at` (default now): the gate and grace then, with the
    keys and settings stored today (a month-to-date budget counts that month's spend so far).
    `seen`: the rows of the request, if the caller read them (`resolve_for`); the context
    remembers them, so the checks before a call do not read them again."""
    from byokctl.domain.resolution import Facts

    if seen is None:
        seen = ctx.store.requests.rows(o.slug, member, PLATFORM_RECORD)
    remember(ctx, seen)
    now = at or clock.now()
    pp, pm, pu = _platform(seen.meta)
    provider = o.provider
    slug = o.slug
    member_key = org_key = None
    approved = True
    if provider in catalog.PROVIDERS:
        if member:
            member_key = _ref(_key(seen, "member", provider, member))
            if member_key is not None and o.base_url is not None:
                from byokctl.services.endpoints import is_approved

                approved = is_approved(ctx.store, slug, member, provider, o.base_url)
        org_key = _ref(_key(seen, "org", provider))
    spent = 0.0
    if o.budget_monthly_usd is not None:
        spent = ctx.store.usage.byok_spent_since(slug, month_start_iso(now))
    return Facts(
        org=slug, plan=o.plan, credits=o.credits, provider=provider,
        model=o.model, base_url=o.base_url, fallback=o.fallback,
        grace_until=o.grace_until, budget_monthly_usd=o.budget_monthly_usd,
        byok_cost_mtd=spent, member=member, member_key=member_key, org_key=org_key,
        platform_provider=pp, platform_model=pm, platform_base_url=pu,
        platform_key=_ref(_key(seen, "platform", pp)),
        now=now, member_key_approved=approved,
    )


def _key(seen: RequestRows, scope: str, provider: str, member: str | None = None) -> Row | None:
    """The key in one slot, among the request's keys (the org's, its member's, the platform's)."""
    for row in seen.keys:
        if row["scope"] == scope and row["provider"] == provider and (
                scope != "member" or row["member"] == member):
            return row
    return None


def remember(ctx: Context, seen: RequestRows) -> None:
    """Keep the request's rows in the context: the checks and the secret's opening before its
    call use them rather than read them again, until the context's next write (Context.recall)."""
    kept: dict[tuple[str, object], object] = {("meta", k): v for k, v in seen.meta.items()}
    if seen.org is not None:
        kept[("orgs", (seen.org["slug"],))] = seen.org
    if seen.member is not None:
        kept[("members", (seen.member["org"], seen.member["email"]))] = seen.member
    for row in seen.keys:
        kept[("keys", (row["id"],))] = row
    ctx.seen = kept


def decide(ctx: Context, org: Org, member: str | None, at: datetime | None = None) -> Decision:
    from byokctl.domain.resolution import resolve

    return resolve(facts(ctx, org, member, at), catalog.load())


def resolve_for(ctx: Context, org: str, at: datetime | None = None) -> tuple[Decision, Facts]:
    """The decision for a request by the current actor on `org` (no call is made), as of `at`
    (default now), and the facts it was made from (`ask` needs them again if the provider
    refuses the key). Its rows are read at once (one round trip on PostgreSQL)."""
    from byokctl.domain.resolution import resolve
    from byokctl.services.orgs import Org
    from byokctl.services.permissions import acting_in, org_exists, require_in

    email = rules.email(ctx.as_email) if ctx.as_email is not None else None
    seen = ctx.store.requests.rows(org, email, PLATFORM_RECORD)
    if seen.org is None:
        org_exists(ctx, org)  # an unknown org is NotFound before any membership is looked at
        return resolve_for(ctx, org, at)  # created since the read: read again
    actor = require_in(ctx, org, rules.KEY_OWN,
                       actor=acting_in(ctx, org, email, seen.member["role"] if seen.member else None))
    f = facts(ctx, Org.from_row(seen.org), actor.email, at, seen)
    return resolve(f, catalog.load()), f
