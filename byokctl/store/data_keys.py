"""Wrapped data keys: the data_keys table (bytes in, bytes out; the vault unwraps)."""

from __future__ import annotations

from byokctl.store.family import Family


class DataKeys(Family):
    """Wrapped data keys: the data_keys table (bytes in, bytes out; the vault unwraps)."""
