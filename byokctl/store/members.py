"""Members of an org: the members table."""

from __future__ import annotations

from byokctl.store.family import Family


class Members(Family):
    """Members of an org: the members table."""
