"""Usage records: one per provider call, and the figures `usage show` sums."""

from __future__ import annotations

from byokctl.store.family import Family


class Usage(Family):
    """Usage records: one per provider call, and the figures `usage show` sums."""
