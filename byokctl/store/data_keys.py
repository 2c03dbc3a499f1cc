"""Wrapped data keys: the data_keys table (bytes in, bytes out; the vault unwraps)."""

from __future__ import annotations

from byokctl.store.family import Family


class DataKeys(Family):
    """Wrapped data keys: the data_keys table (bytes in, bytes out; the vault unwraps)."""

    def count(self) -> int:
        """How many data keys the vault holds (every state)."""
        return self.store.scalar("SELECT count(*) FROM data_keys")

    def has_next(self) -> bool:
        """Whether a rekey is under way: a 'next' data key waits to become the active one."""
        return bool(self.store.scalar("SELECT 1 FROM data_keys WHERE state = 'next'"))
