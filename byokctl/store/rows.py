"""The MACed rows of any table, by table name and primary key (`vault.rowmac` names the columns)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from byokctl.store.family import Family
from byokctl.vault import rowmac

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from byokctl.store import Row

# Table and column names below come from `rowmac.COLUMNS` / `PRIMARY_KEYS` (a KeyError for any
# other table) or from the caller's code, never from input: safe to put in the SQL text.


def _where(table: str) -> str:
    return " AND ".join(f"{c} = ?" for c in rowmac.PRIMARY_KEYS[table])


def _select(table: str) -> str:
    return f"SELECT {', '.join(rowmac.COLUMNS[table])}, mac FROM {table}"  # noqa: S608 - fixed names


def guarded_update(table: str, pk: tuple, mac: str, values: Mapping[str, Any]) -> tuple[str, tuple]:
    """An UPDATE setting `values` on the row at `pk` only if it still carries `mac`, the MAC it
    had when it was read: SQL and parameters. Any change byokctl makes to a MACed column
    changes the MAC, so an unchanged MAC means an unchanged row (or one changed outside
    byokctl, which the new MAC, computed over the row as read, then does not cover). The
    statement changes one row, or none if the row changed since it was read."""
    sets = ", ".join(f"{c} = ?" for c in values)
    return (f"UPDATE {table} SET {sets} WHERE {_where(table)} AND mac = ?",  # noqa: S608
            (*values.values(), *pk, mac))


class Rows(Family):
    """The MACed rows of any table, by table name and primary key (`vault.rowmac` names the columns)."""

    def get(self, table: str, pk: tuple, *, lenient: bool = False) -> Row | None:
        """The row's MACed columns and its `mac`; `lenient`: text that is not UTF-8 comes back
        with surrogate escapes (so the MAC check refuses it) instead of failing the read."""
        sql = f"{_select(table)} WHERE {_where(table)}"
        if not lenient:
            return self.store.one(sql, pk)
        with self.store.lenient("surrogateescape"):
            return self.store.one(sql, pk)

    def set_mac(self, table: str, pk: tuple, mac: str) -> None:
        """Store the row's MAC."""
        self.store.execute_later(f"UPDATE {table} SET mac = ? WHERE {_where(table)}",  # noqa: S608
                                 (mac, *pk))

    def update(self, table: str, pk: tuple, values: Mapping[str, Any]) -> None:
        """Set the columns `values` names (column → value) on the row."""
        sets = ", ".join(f"{c} = ?" for c in values)
        self.store.execute(f"UPDATE {table} SET {sets} WHERE {_where(table)}",  # noqa: S608
                           (*values.values(), *pk))

    def changed(self, table: str, pk: tuple, values: Mapping[str, Any]) -> Row | None:
        """Set the columns `values` names, then the row as now stored (its MACed columns and
        `mac`, as `get`), read back so a MAC covers what the engine keeps (SQLite stores a
        budget of 5 as 5.0, and its RETURNING gives the value before that conversion: 5). A
        PostgreSQL engine does both in one statement (RETURNING)."""
        self.update(table, pk, values)
        return self.get(table, pk)

    def checked_change(self, table: str, pk: tuple,
                       values: Mapping[str, Any]) -> tuple[Row, Row] | None:
        """(the row as it was, read leniently as `get(lenient=True)`; the row as `changed`
        leaves it), or None if there is no such row; inside the caller's write transaction,
        which must be abandoned if the row as it was fails its MAC. A PostgreSQL engine reads
        and changes in one round trip."""
        before = self.get(table, pk, lenient=True)
        if before is None:
            return None
        after = self.changed(table, pk, values)
        if after is None:
            raise KeyError(pk)
        return before, after

    def unmaced(self, table: str) -> list[tuple]:
        """The primary keys of the rows that carry no MAC (a vault from before row MACs)."""
        pks = rowmac.PRIMARY_KEYS[table]
        return [tuple(r) for r in self.store.tuples(
            f"SELECT {', '.join(pks)} FROM {table} WHERE mac IS NULL")]  # noqa: S608

    def check_scan(self, table: str) -> Iterator[tuple[bytes, Any, int]]:
        """(canonical body, stored mac, position) of every row in primary key order, read as
        iterated, for `vault check`: SQLite builds each body (`json_array()` writes text,
        integers and NULL as `macs.canonical` does), so only the MAC is computed in Python.
        A body may differ from the reference for a row written outside byokctl: check a
        mismatch again with `at`. SQLite-specific (json_array, rowid): a PostgreSQL engine
        builds the body in Python with `macs.canonical` and uses its own row position."""
        columns = ", ".join(rowmac.COLUMNS[table])
        order = ", ".join(rowmac.PRIMARY_KEYS[table])
        return self.store.tuples(
            f"SELECT CAST(json_array('{table}', {columns}) AS BLOB), mac, rowid "  # noqa: S608
            f"FROM {table} ORDER BY {order}")

    def at(self, table: str, position: int) -> Row | None:
        """The row (MACed columns and `mac`) at a position `check_scan` gave."""
        return self.store.one(f"{_select(table)} WHERE rowid = ?", (position,))  # noqa: S608
