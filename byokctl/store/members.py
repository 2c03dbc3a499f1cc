"""Members of an org: the members table."""

from __future__ import annotations

from byokctl.store.family import Family


class Members(Family):
    """Members of an org: the members table."""

    def exists(self, org: str, email: str) -> bool:
        """Whether `email` is a member of `org`."""
        return self.store.scalar("SELECT 1 FROM members WHERE org = ? AND email = ?",
                                 (org, email)) is not None
