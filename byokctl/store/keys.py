"""Stored API keys (org, member and platform scope): the keys table; ciphertext in, ciphertext out."""

from __future__ import annotations

from byokctl.store.family import Family


class Keys(Family):
    """Stored API keys (org, member and platform scope): the keys table; ciphertext in, ciphertext out."""
