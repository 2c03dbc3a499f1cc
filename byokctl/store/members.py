"""Members of an org: the members table."""

from __future__ import annotations

from byokctl.store.family import Family


class Members(Family):
    """Members of an org: the members table."""

    def count(self) -> int:
        """How many members the vault holds, over all orgs."""
        return self.store.scalar("SELECT count(*) FROM members")
