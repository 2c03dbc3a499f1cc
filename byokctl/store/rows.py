"""The MACed rows of any table, by table name and primary key (`vault.rowmac` names the columns)."""

from __future__ import annotations

from byokctl.store.family import Family


class Rows(Family):
    """The MACed rows of any table, by table name and primary key (`vault.rowmac` names the columns)."""
