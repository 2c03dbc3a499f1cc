"""The monthly BYOK budget (SPEC §3.6): reached at 100% (refused), a warning from 80%."""

from __future__ import annotations

WARN_RATIO = 0.8


def reached(spent_usd: float, budget_usd: float) -> bool:
    """The budget refuses the next call once the month's spend (and reservations) meet it."""
    return spent_usd >= budget_usd


def warns(spent_usd: float, budget_usd: float) -> bool:
    """Under the budget but at or past 80% of it."""
    return not reached(spent_usd, budget_usd) and spent_usd >= WARN_RATIO * budget_usd
