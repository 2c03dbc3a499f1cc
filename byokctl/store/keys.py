"""Stored API keys (org, member and platform scope): the keys table; ciphertext in, ciphertext out."""

from __future__ import annotations

from byokctl.store.family import Family


class Keys(Family):
    """Stored API keys (org, member and platform scope): the keys table; ciphertext in, ciphertext out."""

    def exists(self, key_id: str) -> bool:
        """Whether a key of this id is stored."""
        return self.store.one("SELECT 1 FROM keys WHERE id = ?", (key_id,)) is not None
