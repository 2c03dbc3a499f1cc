"""Org credit balances: exact integers, changed inside the write transaction (which SQLite
takes up front, so concurrent writers never lose or double-count a credit), through
`integrity.update_org`, which checks and re-MACs the org row."""

from __future__ import annotations

import re
from dataclasses import dataclass

from byokctl import clock
from byokctl.errors import NotFound
from byokctl.services import audit, rules
from byokctl.services.context import Context
from byokctl.services.permissions import require

MAX_ADD = rules.MAX_CREDITS_ADD


def parse_amount(text: str | int) -> int:
    """A positive whole number of credits, from the command line's text (`500`, `+500`)."""
    value = str(text).strip()
    if not re.fullmatch(r"\+?[0-9]{1,16}", value) or int(value) < 1:
        raise rules.UsageError(
            f"The credit amount must be a positive whole number (e.g. 500), not '{text}'")
    amount = int(value)
    if amount > MAX_ADD:
        raise rules.UsageError(f"The credit amount must be at most {MAX_ADD:,} per grant, "
                               f"not {amount:,}")
    return amount


@dataclass
class Balance:
    org: str
    balance: int

    def to_json(self) -> dict:
        return {"org": self.org, "balance": self.balance}


@dataclass
class Grant:
    org: str
    added: int
    before: int
    balance: int
    reason: str | None

    def to_json(self) -> dict:
        return {"org": self.org, "added": self.added, "before": self.before,
                "balance": self.balance, "reason": self.reason}


def add(ctx: Context, slug: str, amount: str | int, reason: str | None = None) -> Grant:
    from byokctl.services import integrity  # hashes and row MACs: writes only

    n = parse_amount(amount)
    if reason:
        rules.plain_text(reason, "The reason")
    require(ctx, slug, rules.OPERATOR)
    with ctx.write():
        # Relative to the checked row, in the write transaction: no credit lost or doubled.
        changed = integrity.update_org(
            ctx, slug, lambda org: {"credits": org["credits"] + n, "updated_at": clock.stamp()})
        if changed is None:
            raise NotFound(f"No org '{slug}'; see `byokctl org list`")
        after = changed[1]["credits"]
        audit.record(ctx, "credits.add", org=slug, target=slug,
                     before={"balance": after - n},
                     after={"balance": after, "added": n, "reason": reason or None})
    return Grant(slug, n, after - n, after, reason or None)


def show(ctx: Context, slug: str) -> Balance:
    require(ctx, slug, rules.ORG_VIEW)
    return Balance(slug, ctx.store.scalar("SELECT credits FROM orgs WHERE slug = ?", (slug,)))
