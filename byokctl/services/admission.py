"""Admission of a call against what calls in flight have reserved (SPEC §1 Credits, §3.5-6).

Before a call reaches the provider it reserves its estimated maximum cost, in its own short
write transaction: credits in platform mode, USD against the monthly budget in BYOK mode. A
call is admitted only if what is left after the others' reservations covers its own, so
concurrent calls cannot together spend a balance or budget more than once. The call settles
(its reservation deleted, its real cost charged and recorded) in one transaction afterwards.
A reservation left by a process that was killed stops counting at `expires_at`: the call's
deadline plus RESERVATION_MARGIN.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from byokctl import clock
from byokctl.domain import budget
from byokctl.domain.credits import admits, credits_for, max_cost_usd
from byokctl.errors import Insufficient, NotFound
from byokctl.providers import catalog
from byokctl.services.context import Context

# Time after the call's deadline (--timeout) for it to be recorded (a busy vault is waited
# for) before its reservation stops counting.
RESERVATION_MARGIN = timedelta(seconds=120)


@dataclass
class Reservation:
    id: int
    org: str
    org_created_at: str  # settles on this org only, not a later one of the same slug
    mode: str
    credits: int
    cost_usd: float
    expires_at: str


def estimate_usd(provider: str, model: str, *, prompt: str, system: str | None,
                 max_tokens: int) -> float:
    """The most the call can cost at the catalog's prices for `provider`/`model`."""
    return max_cost_usd(catalog.load().find(provider, model), prompt=prompt, system=system,
                        max_tokens=max_tokens)


def reserve(ctx: Context, *, org: str, mode: str, estimate_usd: float, credit_value: float,
            deadline_s: float, budget_usd: float | None, month_start: str) -> Reservation | None:
    """Admit the call or raise Insufficient; the reservation to settle, or None (a BYOK call
    with no budget has nothing to reserve)."""
    if mode != "platform" and budget_usd is None:
        return None
    now = clock.now()
    expires = clock.iso(now + timedelta(seconds=deadline_s) + RESERVATION_MARGIN)
    with ctx.store.tx() as store:
        store.reservations.expire(clock.iso(now))
        found = store.orgs.credits_and_created_at(org)
        if found is None:
            raise NotFound(f"No org '{org}'", "see `byokctl org list`")
        balance, created_at = found
        held, held_usd, calls, until = store.reservations.held(org, mode)
        if mode == "platform":
            want = credits_for(estimate_usd, credit_value)
            if not admits(balance, held, calls, want):
                raise Insufficient(
                    f"Org {org} has {balance} credits and calls in flight have reserved {held} "
                    f"of them ({calls} call{'s' if calls != 1 else ''}; this call needs {want})",
                    f"add some with `byokctl credits add {org} N`, or wait for them to finish "
                    f"(a reservation of a process that was killed lapses by {until})")
            cost = estimate_usd
        else:
            assert budget_usd is not None
            spent = store.usage.byok_spent_since(org, month_start)
            if budget.reached(spent + held_usd, budget_usd):
                raise Insufficient(
                    f"Org {org} has used ${spent:.2f} of its monthly BYOK budget of "
                    f"${budget_usd:.2f} and calls in flight have reserved ${held_usd:.2f} more",
                    f"raise it with `byokctl org set-budget {org} --monthly-usd N`, or wait for "
                    f"them to finish (a reservation of a process that was killed lapses by {until})")
            want, cost = 0, estimate_usd
        rid = store.reservations.insert(org=org, mode=mode, credits=want, cost_usd=cost,
                                        created_at=clock.iso(now), expires_at=expires)
    return Reservation(rid, org, created_at, mode, want, cost, expires)


def release(ctx: Context, reservation: Reservation | None) -> None:
    """Delete the reservation in the caller's transaction (the call settled or failed)."""
    if reservation is not None:
        ctx.store.reservations.delete(reservation.id)
