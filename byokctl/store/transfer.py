"""Whole tables out of one vault and into another (`vault copy`), rows unchanged."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from byokctl.store.family import Family

# Parents before children, so the foreign keys hold at every insert. Every table of the vault
# but the migration record, which each store keeps for itself.
ORDER = ("meta", "data_keys", "orgs", "members", "keys", "endpoint_approvals", "reservations",
         "usage", "usage_daily", "usage_daily_all", "audit")
BATCH = 2_000


class Transfer(Family):
    """A vault's rows table by table, as stored: ciphertexts, MACs and ids as they are."""

    def columns(self, table: str) -> list[str]:
        """The table's columns, in their order."""
        cur = self.store.execute(f"SELECT * FROM {table} LIMIT 0")  # noqa: S608 - ORDER names
        return [d[0] for d in cur.description]

    def rows(self, table: str, columns: list[str]) -> Iterator[tuple[Any, ...]]:
        """Every row of `table` as a tuple of `columns`, streamed in the first column's order."""
        return self.store.tuples(f"SELECT {', '.join(columns)} FROM {table} "  # noqa: S608
                                 f"ORDER BY {columns[0]}")

    def load(self, table: str, columns: list[str], rows: Iterable[tuple[Any, ...]]) -> int:
        """Insert `rows` (tuples of `columns`) into `table`, in batches; how many."""
        sql = (f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608
               f"VALUES ({', '.join('?' * len(columns))})")
        done, batch = 0, []
        for row in rows:
            batch.append(row)
            if len(batch) == BATCH:
                self.store.executemany(sql, batch)
                done, batch = done + len(batch), []
        if batch:
            self.store.executemany(sql, batch)
            done += len(batch)
        return done

    def count(self, table: str) -> int:
        """How many rows `table` holds."""
        return int(self.store.scalar(f"SELECT count(*) FROM {table}"))  # noqa: S608

    def is_blank(self) -> bool:
        """Whether this store holds no vault yet (the schema alone: no vault id, no rows)."""
        return all(self.count(t) == 0 for t in ORDER)

    def loaded(self) -> None:
        """After rows were loaded with their own ids: make the next generated ids follow them
        (SQLite's integer keys do by themselves)."""
