"""Organizations: the orgs table."""

from __future__ import annotations

from byokctl.store.family import Family


class Orgs(Family):
    """Organizations: the orgs table."""

    def count(self) -> int:
        """How many orgs the vault holds."""
        return self.store.scalar("SELECT count(*) FROM orgs")
