"""The audit chain: appending entries, reading them back, the head."""

from __future__ import annotations

from byokctl.store.family import Family


class Audit(Family):
    """The audit chain: appending entries, reading them back, the head."""
