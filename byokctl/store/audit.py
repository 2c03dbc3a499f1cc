"""The audit chain: appending entries, reading them back, the head."""

from __future__ import annotations

from byokctl.store.family import Family


class Audit(Family):
    """The audit chain: appending entries, reading them back, the head."""

    def last_seq(self) -> int:
        """The sequence number of the newest entry; 0 for an empty log."""
        return self.store.scalar("SELECT coalesce(max(seq), 0) FROM audit")
