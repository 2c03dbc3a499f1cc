"""Member-key endpoint approvals: the endpoint_approvals table."""

from __future__ import annotations

from byokctl.store.family import Family


class Approvals(Family):
    """Member-key endpoint approvals: the endpoint_approvals table."""
