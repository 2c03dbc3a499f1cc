"""In-flight reservations of credits and budget: the reservations table."""

from __future__ import annotations

from byokctl.store.family import Family


class Reservations(Family):
    """In-flight reservations of credits and budget: the reservations table."""
