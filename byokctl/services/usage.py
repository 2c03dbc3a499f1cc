"""Usage records: one per `ask` (failed calls too), never any prompt or response text."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from byokctl import clock
from byokctl.providers import registry
from byokctl.services import rules
from byokctl.services.context import Context
from byokctl.services.permissions import require, require_operator

if TYPE_CHECKING:
    from byokctl.store import Row, Store

# What `usage show --by` groups on (the store knows each one's expression).
GROUPINGS = ("provider", "model", "member", "mode", "day", "org")


@dataclass
class Record:
    org: str
    actor: str
    mode: str
    outcome: str  # "ok" or the error's exit-code label
    member: str | None = None
    provider: str | None = None
    model: str | None = None
    key_id: str | None = None
    fingerprint: str | None = None
    fallback_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    catalog_version: str | None = None
    credits_charged: int = 0
    latency_ms: int | None = None
    ts: str = field(default_factory=clock.stamp)


def insert(store: Store, record: Record) -> None:
    """Append one record in the caller's transaction on `store`."""
    store.usage.insert(vars(record))


def insert_many(store: Store, records: Iterable[Record]) -> int:
    """Append many records in the caller's transaction (imports, benchmarks); returns the count."""
    return store.usage.insert_many(map(vars, records))


@dataclass
class Report:
    org: str | None
    by: str
    since: str | None
    until: str | None
    rows: list[dict]
    totals: dict
    billing: list[dict]  # BYOK orgs: billing happens at the provider; where to see it

    def to_json(self) -> dict:
        return asdict(self)


def show(ctx: Context, org: str | None, *, since: str | None, until: str | None,
         by: str) -> Report:
    rules.choice(by, GROUPINGS, "grouping (--by)")
    if org is None:
        require_operator(ctx, "see usage across all orgs")
    else:
        require(ctx, org, rules.ORG_VIEW)
    lo = clock.iso(rules.parse_when(since)) if since else None
    hi = clock.iso(rules.parse_when(until, end_of_day=True)) if until else None
    if lo and hi and lo > hi:
        raise rules.UsageError(f"--since {since} is after --until {until}", "swap them")
    groups = ctx.store.usage.grouped_totals(by, org=org, since=lo, until=hi)
    rows = [{by: r["k"], **_measures(r)} for r in groups]
    return Report(org, by, lo, hi, rows, _totals(groups), _billing(ctx, org))


def _totals(groups: list[Row]) -> dict:
    """The report's totals from its groups' sums, in one pass over the records (no second
    scan): every record is in exactly one group. Cost is summed exactly (fsum, as SQLite's
    own sum is compensated), so rounding gives what one sum over the records gives."""
    if not groups:  # as SQLite's sums over no rows: coalesce(NULL, 0) is the integer 0
        return {"calls": 0, "errors": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0,
                "credits_charged": 0}
    def total(m: str) -> int:
        return sum(r[m] or 0 for r in groups)

    return {"calls": total("calls"), "errors": total("errors"),
            "input_tokens": total("input_tokens"), "output_tokens": total("output_tokens"),
            "cost_usd": round(math.fsum(r["cost_usd"] for r in groups), 6),
            "credits_charged": total("credits_charged")}


def _measures(r: Row) -> dict:
    return {
        "calls": r["calls"], "errors": r["errors"] or 0, "input_tokens": r["input_tokens"],
        "output_tokens": r["output_tokens"], "cost_usd": round(r["cost_usd"], 6),
        "credits_charged": r["credits_charged"],
    }


def _billing(ctx: Context, org: str | None) -> list[dict]:
    if org is None:
        return []
    provider = ctx.store.orgs.provider(org)
    p = registry.FACTS.get(provider)
    if p is None:
        return []
    return [{"provider": provider, "usage_url": p.usage_page,
             "note": f"BYOK calls are billed by {p.label} to the org's own key; see {p.usage_page}"}]
