"""What every engine's store is: the table families, meta values and transactions.

Services type against `Store`; `SQLiteStore` (byokctl/store/__init__.py) and `PostgresStore`
(byokctl/store/postgres.py) implement it. The families' SQL is shared by both engines; an
engine overrides a family (or a method of one) only where its dialect differs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from byokctl.store.approvals import Approvals
    from byokctl.store.audit import Audit
    from byokctl.store.data_keys import DataKeys
    from byokctl.store.keys import Keys
    from byokctl.store.members import Members
    from byokctl.store.orgs import Orgs
    from byokctl.store.requests import Requests
    from byokctl.store.reservations import Reservations
    from byokctl.store.rows import Rows
    from byokctl.store.transfer import Transfer
    from byokctl.store.usage import Usage


Row = Mapping[str, Any]  # what every query returns a row as: column name → value


class Store:
    """One vault database. Engines implement the SQL primitives and transactions below; the
    families and meta values are built on them."""

    engine: str = ""  # "sqlite" or "postgresql"

    @property
    def location(self) -> str:
        """Where the vault is, for messages: a file path, or a database URL without password."""
        raise NotImplementedError

    # -- the table families (each imported on first use) ------------------------------------
    @cached_property
    def orgs(self) -> Orgs:
        from byokctl.store.orgs import Orgs

        return Orgs(self)

    @cached_property
    def members(self) -> Members:
        from byokctl.store.members import Members

        return Members(self)

    @cached_property
    def keys(self) -> Keys:
        from byokctl.store.keys import Keys

        return Keys(self)

    @cached_property
    def usage(self) -> Usage:
        from byokctl.store.usage import Usage

        return Usage(self)

    @cached_property
    def audit(self) -> Audit:
        from byokctl.store.audit import Audit

        return Audit(self)

    @cached_property
    def data_keys(self) -> DataKeys:
        from byokctl.store.data_keys import DataKeys

        return DataKeys(self)

    @cached_property
    def approvals(self) -> Approvals:
        from byokctl.store.approvals import Approvals

        return Approvals(self)

    @cached_property
    def reservations(self) -> Reservations:
        from byokctl.store.reservations import Reservations

        return Reservations(self)

    @cached_property
    def rows(self) -> Rows:
        from byokctl.store.rows import Rows

        return Rows(self)

    @cached_property
    def requests(self) -> Requests:
        from byokctl.store.requests import Requests

        return Requests(self)

    @cached_property
    def transfer(self) -> Transfer:
        from byokctl.store.transfer import Transfer

        return Transfer(self)

    # -- meta values ----------------------------------------------------------------------
    def meta(self, key: str, default: str | None = None) -> str | None:
        value = self.scalar("SELECT value FROM meta WHERE key = ?", (key,))
        return default if value is None else value

    def metas(self, *keys: str) -> dict[str, str | None]:
        """Several meta values in one query: key → value (None where there is none)."""
        marks = ", ".join("?" for _ in keys)
        found = {r[0]: r[1] for r in self.all(
            f"SELECT key, value FROM meta WHERE key IN ({marks})", keys)}  # noqa: S608 - marks only
        return {k: found.get(k) for k in keys}

    def set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            self.execute_later("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self.execute_later(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # -- what each engine provides ---------------------------------------------------------
    @property
    def in_transaction(self) -> bool:
        """Whether a transaction (ours or an outer caller's) is open on this store."""
        raise NotImplementedError

    def tx(self) -> AbstractContextManager[Store]:
        """A write transaction holding the vault's write lock; nested, a savepoint."""
        raise NotImplementedError

    def rollback(self) -> None:
        """Abandon the open transaction, if any."""
        raise NotImplementedError

    def execute(self, sql: str, params: Any = ()) -> Any:
        """Run one statement (`?` placeholders); its cursor. For the families only."""
        raise NotImplementedError

    def executemany(self, sql: str, rows: Any) -> Any:
        """Run one statement for each parameter row. For the families only."""
        raise NotImplementedError

    def execute_later(self, sql: str, params: Any = ()) -> None:
        """Run a write whose outcome nobody reads (no rows, no row count). Inside a transaction
        an engine may hold it and send it with the transaction's next statement, in order
        (PostgreSQL pipelines them: one round trip for several statements); its error, if
        any, then surfaces there, still inside the transaction. For the families only."""
        self.execute(sql, params)

    def one(self, sql: str, params: Any = ()) -> Row | None:
        """The first row of a query, or None. For the families only."""
        raise NotImplementedError

    def all(self, sql: str, params: Any = ()) -> list[Row]:
        """Every row of a query. For the families only."""
        raise NotImplementedError

    def batch(self, queries: Sequence[tuple[str, Any]]) -> list[list[Row]]:
        """Every row of each of several queries, whose parameters do not depend on each
        other's results. An engine may send them together (PostgreSQL pipelines them: one
        round trip, after any writes `execute_later` holds). For the families only."""
        return [self.all(sql, params) for sql, params in queries]

    def scalar(self, sql: str, params: Any = ()) -> Any:
        """The first column of the first row, or None. For the families only."""
        row = self.one(sql, params)
        return None if row is None else row[0]

    def iterate(self, sql: str, params: Any = ()) -> Iterator[Row]:
        """The rows of a query, streamed. For the families only."""
        raise NotImplementedError

    def tuples(self, sql: str, params: Any = ()) -> Iterator[tuple[Any, ...]]:
        """The rows as plain tuples, streamed (the fast scans). For the families only."""
        raise NotImplementedError

    # -- engine operations ------------------------------------------------------------------
    def schema_version(self) -> int:
        """How many of byokctl's migrations the vault has run."""
        raise NotImplementedError

    def lenient(self, errors: str = "replace") -> AbstractContextManager[Store]:
        """Reads inside it decode stored text that is not UTF-8 with `errors` rather than fail
        (an engine that refuses such text at write only yields)."""
        raise NotImplementedError

    def file_check(self) -> Any:
        """The storage's own consistency check, run beside `vault check`'s row walk: an object
        with `start()`, `cancel()`, `join()` and `damage()` (a list of problems)."""
        raise NotImplementedError

    def discard(self) -> None:
        """Close the store and remove the vault it holds: one whose creation failed."""
        raise NotImplementedError

    def purge_wal(self) -> bool:
        """Make deleted ciphertext leave the storage now (see the engines); False if it could
        not be done yet."""
        raise NotImplementedError

    def set_busy_timeout(self, ms: int) -> None:
        """How long a statement waits for another connection's lock before the engine gives
        up (SQLite's busy timeout, PostgreSQL's lock_timeout); default BUSY_TIMEOUT_MS."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the connection(s)."""
        raise NotImplementedError
