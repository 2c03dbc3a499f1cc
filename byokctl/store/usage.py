"""Usage records: one per provider call, and the figures `usage show` sums."""

from __future__ import annotations

from byokctl.store.family import Family


class Usage(Family):
    """Usage records: one per provider call, and the figures `usage show` sums."""

    def byok_cost_since(self, org: str, since: str) -> float:
        """What the org's BYOK calls from `since` (an ISO timestamp) on cost, in USD (0 if none)."""
        return self.store.scalar("SELECT coalesce(sum(cost_usd), 0) FROM usage WHERE org = ? "
                                 "AND mode = 'byok' AND ts >= ?", (org, since)) or 0.0
