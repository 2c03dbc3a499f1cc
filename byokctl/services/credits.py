"""Org credit balances: exact integers, changed inside the write transaction (which SQLite
takes up front, so concurrent writers never lose or double-count a credit).

`change()` is the only code that writes an org's credits or shortfall, through
`integrity.update_org`, which checks and re-MACs the org row: a grant pays the shortfall
first, and a charge larger than the balance takes the balance to zero and keeps the rest as
shortfall (never silently dropped)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from byokctl import clock
from byokctl.domain import credits as arithmetic
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
    shortfall: int = 0  # credits charged that the balance could not cover; `credits add` pays it

    def to_json(self) -> dict:
        return {"org": self.org, "balance": self.balance, "shortfall": self.shortfall}


@dataclass
class Grant:
    org: str
    added: int
    before: int
    balance: int
    reason: str | None
    paid_shortfall: int = 0  # of `added`, what went to the shortfall first
    shortfall: int = 0       # what is still owed after the grant

    def to_json(self) -> dict:
        return {"org": self.org, "added": self.added, "before": self.before,
                "balance": self.balance, "reason": self.reason,
                "paid_shortfall": self.paid_shortfall, "shortfall": self.shortfall}


@dataclass
class Change:
    """One write to an org's credits: the balance and shortfall before and after."""

    before: int
    after: int
    shortfall_before: int
    shortfall_after: int

    @property
    def paid(self) -> int:
        """Credits taken from the balance by a charge."""
        return max(0, self.before - self.after)

    @property
    def owed(self) -> int:
        """Credits a charge added to the shortfall."""
        return max(0, self.shortfall_after - self.shortfall_before)


def change(ctx: Context, slug: str, *, add: int = 0, charge: int = 0,
           created_at: str | None = None) -> Change | None:
    """Add `add` credits (paying the shortfall first) or charge `charge` (what the balance
    cannot cover becomes shortfall), in the caller's write transaction. With `created_at`,
    only the org created then (not a later org of the same slug). None if there is no such
    org. The one function that writes credits: relative to the row as read (and MAC-checked)
    inside the caller's transaction, which holds the write lock (BEGIN IMMEDIATE), so no other
    writer comes in between; Integrity if the row was changed outside byokctl."""
    from byokctl.services import integrity  # hashes and row MACs: writes only

    if add < 0 or charge < 0 or (add and charge):
        raise ValueError("one of add or charge, not negative")
    done: list[Change] = []

    def apply(org: Any) -> dict:
        if created_at is not None and org["created_at"] != created_at:
            return {}
        before = arithmetic.Balance(org["credits"], org["shortfall"])
        after = arithmetic.grant(before, add) if add else arithmetic.charge(before, charge)
        done.append(Change(before.credits, after.credits, before.shortfall, after.shortfall))
        return {"credits": after.credits, "shortfall": after.shortfall, "updated_at": clock.stamp()}

    integrity.update_org(ctx, slug, apply)
    return done[0] if done else None


def add(ctx: Context, slug: str, amount: str | int, reason: str | None = None) -> Grant:
    """Grant credits; an outstanding shortfall is paid from them first."""
    n = parse_amount(amount)
    if reason:
        rules.plain_text(reason, "The reason")
    require(ctx, slug, rules.OPERATOR)
    with ctx.write():
        c = change(ctx, slug, add=n)
        if c is None:
            raise NotFound(f"No org '{slug}'", "see `byokctl org list`")
        repaid = c.shortfall_before - c.shortfall_after
        before: dict = {"balance": c.before}
        after: dict = {"balance": c.after, "added": n, "reason": reason or None}
        if c.shortfall_before:  # the debt and its repayment, when there was one
            before["shortfall"] = c.shortfall_before
            after.update(shortfall=c.shortfall_after, paid_shortfall=repaid)
        audit.record(ctx, "credits.add", org=slug, target=slug, before=before, after=after)
    return Grant(slug, n, c.before, c.after, reason or None, repaid, c.shortfall_after)


def show(ctx: Context, slug: str) -> Balance:
    require(ctx, slug, rules.ORG_VIEW)
    credits, shortfall = ctx.store.orgs.balance(slug)  # `require` saw the org
    return Balance(slug, credits, shortfall)
