"""Usage records: one per provider call, and the figures `usage show` sums."""

from __future__ import annotations

from byokctl.store.family import Family


class Usage(Family):
    """Usage records: one per provider call, and the figures `usage show` sums."""

    def count(self) -> int:
        """How many usage records the vault holds."""
        return self.store.scalar("SELECT count(*) FROM usage")
