"""The PostgreSQL engine: one vault shared by a team's operators, CI runners and servers.

Imported only for a `postgresql://` URL (or a libpq keyword DSN), so file users never load
psycopg. The families' SQL is shared with SQLite: `?` placeholders become psycopg's `%s` here,
rows are `PgRow`s (by name and by position, as `sqlite3.Row`), and the integer sums PostgreSQL
returns as `numeric` come back as `int`.

Writers are serialised as SQLite's BEGIN IMMEDIATE serialises them: every write transaction
first takes one transaction-level advisory lock, so the audit chain's head, credits and
reservations are read and changed by one writer at a time, on any machine. The one write that
reads nothing first (a BYOK call's record and its key's last use, guarded by the key row as the
call read it: `shared_write`) holds that lock shared, beside others like it. The wait for it
(and for any row lock) is bounded by `lock_timeout`, after which the command fails as busy
(exit 12), never hangs. Reads take no lock.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import psycopg
from psycopg import conninfo
from psycopg.adapt import Loader
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from byokctl import store as _engines
from byokctl.errors import Conflict, Integrity, NotFound
from byokctl.store import SCHEMA_LATEST
from byokctl.store.base import Store

if TYPE_CHECKING:
    from byokctl.store.audit import Audit
    from byokctl.store.data_keys import DataKeys
    from byokctl.store.keys import Keys
    from byokctl.store.members import Members
    from byokctl.store.rows import Rows
    from byokctl.store.transfer import Transfer
    from byokctl.store.usage import Usage

WRITE_LOCK = 0x62796F6B  # "byok": the advisory lock every write transaction holds
IDLE_IN_TX_TIMEOUT_MS = 120_000  # a client that hangs mid-transaction frees the lock after this
CONNECT_TIMEOUT_S = 10
ITER_SIZE = 2_000  # rows a streamed query fetches at a time
# A write transaction's first round trip (a simple query: several statements in one message):
# BEGIN, the write lock, and (once the schema exists) the data keys as the lock holder sees them.
_BEGIN_LOCKED = f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
_BEGIN_LOCKED_KEYS = f"{_BEGIN_LOCKED}; SELECT id, purpose, state, wrapped FROM data_keys ORDER BY id"
# The write lock held shared, by a transaction of one statement that reads nothing before it
# writes (`shared_write`): beside others like it, never beside a writer's transaction.
_LOCKED_SHARED = f"SELECT pg_advisory_xact_lock_shared({WRITE_LOCK})"


def display(dsn: str) -> str:
    """The database as a URL fit for messages: user, host, port and name; a password, from
    wherever it came, shown as `***`."""
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "postgresql://(an unreadable database URL)"
    user = parts.get("user") or ""
    secret = ":***" if parts.get("password") else ""
    auth = f"{quote(str(user), safe='')}{secret}@" if user or secret else ""
    host = str(parts.get("host") or "")
    port = f":{parts['port']}" if parts.get("port") else ""
    name = quote(str(parts.get("dbname") or ""), safe="")
    if host.startswith("/"):  # a socket directory: a parameter, as libpq writes it
        query = f"host={quote(host, safe='/')}" + (f"&port={parts['port']}" if parts.get("port") else "")
        return f"postgresql://{auth}/{name}?{query}"
    return f"postgresql://{auth}{quote(host, safe=',')}{port}/{name}"


def has_password(dsn: str) -> bool:
    """Whether the URL or DSN itself carries a password."""
    try:
        return bool(conninfo.conninfo_to_dict(dsn).get("password"))
    except psycopg.ProgrammingError:
        return False


def scrub(text: str, dsn: str) -> str:
    """`text` (a driver's message) without the password `dsn` carries, should it echo it."""
    with contextlib.suppress(psycopg.ProgrammingError):
        if secret := conninfo.conninfo_to_dict(dsn).get("password"):
            text = text.replace(str(secret), "***")
    return text


class PgRow(tuple):
    """A row by column name or position, like `sqlite3.Row`; `dict(row)` works."""

    _index: dict[str, int]

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor: psycopg.Cursor[Any]) -> Any:
    # The names straight from the result (`cursor.description` builds a Column, with its type
    # looked up, for each column of each result: ~70 per API call); one index per column list.
    result = cursor.pgresult
    names = () if result is None else tuple(result.fname(i) or b"" for i in range(result.nfields))
    index = _index(names)

    def make(values: Sequence[Any]) -> PgRow:
        row = PgRow(values)
        row._index = index
        return row

    return make


@lru_cache(maxsize=256)
def _index(names: tuple[bytes, ...]) -> dict[str, int]:
    return {n.decode(): i for i, n in enumerate(names)}


def make_row(names: Sequence[str], values: Sequence[Any]) -> PgRow:
    """A row of `values` by these column names (part of a result's row, split)."""
    row = PgRow(values)
    row._index = _index(tuple(n.encode() for n in names))
    return row


class _IntegralNumeric(Loader):
    """`numeric` (what PostgreSQL's sum of integers is) as `int` when whole, else `float`: the
    types SQLite gives for the same sums."""

    def load(self, data: Any) -> Any:
        value = Decimal(bytes(data).decode())
        return int(value) if value == value.to_integral_value() else float(value)


@lru_cache(maxsize=512)
def _paramstyle(sql: str) -> str:
    """`?` placeholders as psycopg's `%s` (and a literal `%` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresStore(Store):
    """A vault in a PostgreSQL database: one connection, autocommit outside `tx()`."""

    engine = "postgresql"

    def __init__(self, dsn: str, conn: psycopg.Connection[Any]) -> None:
        self.dsn = dsn
        self.conn = conn
        self._depth = 0
        self._tx_open = False  # inside our own `tx()`: a statement that fails is never redone
        self._later: list[tuple[str, Any]] = []  # writes held for the next round trip (`execute_later`)
        self.schema_ready = False  # the vault's tables exist (opened, created or migrated)
        # The data keys read with BEGIN (`data_keys.as_begun`), until the transaction's next statement.
        self.begun_data_keys: list[tuple[Any, ...]] | None = None
        self.immutable = False
        self.busy_ms: int | None = None  # set_busy_timeout's; None: BUSY_TIMEOUT_MS

    @property
    def location(self) -> str:
        return display(self.dsn)

    @property
    def path(self) -> str:  # what messages shared with the SQLite engine print
        return self.location

    # -- the families whose SQLite versions use SQLite's dialect --------------------------------
    @cached_property
    def keys(self) -> Keys:
        from byokctl.store.postgres_families import PgKeys

        return PgKeys(self)

    @cached_property
    def data_keys(self) -> DataKeys:
        from byokctl.store.postgres_families import PgDataKeys

        return PgDataKeys(self)

    @cached_property
    def rows(self) -> Rows:
        from byokctl.store.postgres_families import PgRows

        return PgRows(self)

    @cached_property
    def audit(self) -> Audit:
        from byokctl.store.postgres_families import PgAudit

        return PgAudit(self)

    @cached_property
    def members(self) -> Members:
        from byokctl.store.postgres_families import PgMembers

        return PgMembers(self)

    @cached_property
    def usage(self) -> Usage:
        from byokctl.store.postgres_families import PgUsage

        return PgUsage(self)

    @cached_property
    def transfer(self) -> Transfer:
        from byokctl.store.postgres_families import PgTransfer

        return PgTransfer(self)

    # -- transactions ---------------------------------------------------------------------
    @property
    def in_transaction(self) -> bool:
        """Inside `tx()`: the only way byokctl opens a transaction here (autocommit otherwise),
        so a connection the server dropped mid-way never reads as one still open."""
        return self._tx_open

    @contextmanager
    def tx(self) -> Iterator[PostgresStore]:
        """A write transaction holding the vault's write lock; nested, a savepoint.

        BEGIN and the lock go in one round trip; writes held by `execute_later` go with the
        next statement, the last ones with COMMIT."""
        if self._tx_open:
            self._depth += 1
            name = f"nested_{self._depth}"
            self._send(f"SAVEPOINT {name}")
            try:
                yield self
            except BaseException:
                self._send(f"ROLLBACK TO SAVEPOINT {name}")  # after what was held: in order
                self._send(f"RELEASE SAVEPOINT {name}")
                raise
            else:
                self._send(f"RELEASE SAVEPOINT {name}")
            finally:
                self._depth -= 1
            return
        try:  # nothing done yet: safe to redo on a new connection
            self.begun_data_keys = self._retrying(self._begin)
        except BaseException:
            self.rollback()  # a lock wait that timed out leaves the transaction open
            raise
        self._tx_open = True
        try:
            yield self
            self._send("COMMIT")
        except BaseException:
            self.rollback()
            raise
        finally:
            self._tx_open = False
            self.begun_data_keys = None

    def _begin(self) -> list[tuple[Any, ...]] | None:
        """BEGIN and the write lock, and the data keys once the schema exists: one round trip."""
        if not self.schema_ready:
            self.conn.execute(_BEGIN_LOCKED)
            return None
        cur = self.conn.execute(_BEGIN_LOCKED_KEYS)
        cur.nextset()  # past BEGIN's result, then the lock's
        cur.nextset()
        return [tuple(r) for r in cur.fetchall()]

    def rollback(self) -> None:
        self._later.clear()  # never sent: nothing to undo
        if self.conn.closed:
            return
        with contextlib.suppress(psycopg.OperationalError):
            if self.conn.info.transaction_status != TransactionStatus.IDLE:
                self.conn.execute("ROLLBACK")

    # -- SQL primitives ---------------------------------------------------------------------
    def execute(self, sql: str, params: Any = ()) -> psycopg.Cursor[Any]:
        if not params:
            return self._retrying(lambda: self._send(sql))
        return self._retrying(lambda: self._send(_paramstyle(sql), params))

    def execute_later(self, sql: str, params: Any = ()) -> None:
        if not self._tx_open:
            self.execute(sql, params)
        else:
            self._later.append((_paramstyle(sql), params) if params else (sql, None))

    def _send(self, sql: str, params: Any = None) -> psycopg.Cursor[Any]:
        """Run one statement, after the writes held for it: all in one pipeline, one round
        trip. An error in any of them is raised here (the transaction is then aborted)."""
        self.begun_data_keys = None  # read at BEGIN: good only until the next statement
        if not self._later:
            return self.conn.execute(sql, params)
        held, self._later = self._later, []
        with self.conn.pipeline():
            for q, p in held:
                self.conn.execute(q, p)
            cur = self.conn.execute(sql, params)
        return cur

    def _flush(self) -> None:
        """Send the held writes now (before a statement that does not go through `_send`)."""
        self.begun_data_keys = None
        if self._later:
            held, self._later = self._later, []
            with self.conn.pipeline():
                for q, p in held:
                    self.conn.execute(q, p)

    def batch(self, queries: Sequence[tuple[str, Any]]) -> list[list[PgRow]]:
        """The queries in one pipeline with the held writes before them: one round trip."""
        def run() -> list[list[PgRow]]:
            self.begun_data_keys = None
            held, self._later = self._later, []
            with self.conn.pipeline():
                for q, p in held:
                    self.conn.execute(q, p)
                cursors = [self.conn.execute(_paramstyle(q), p) if p else self.conn.execute(q)
                           for q, p in queries]
            return [c.fetchall() for c in cursors]

        return self._retrying(run)

    def shared_write(self, sql: str, params: Any) -> list[PgRow]:
        """One statement in a transaction of its own that holds the write lock shared, so
        such transactions run beside each other but never beside a writer's whole transaction
        (which holds it alone): the lock and the statement in one pipeline, one round trip.
        Without BEGIN, the two are one implicit transaction, which the server commits at the
        pipeline's Sync (an error aborts both). The lock comes first, as in every write
        transaction: the statement's tables are locked, and its snapshot taken, only once it
        is held (a writer's DDL never waits on it). Only for a statement that checks, itself,
        every row it changes (a guarded update): nothing was read under the lock before it.
        Its rows; on a failure nothing is kept, except where the connection was lost: the
        server may then still commit what it was sent, so the caller must find out."""
        if self._tx_open or self._later:
            raise RuntimeError("shared_write runs in a transaction of its own")
        self.begun_data_keys = None
        try:
            with self.conn.pipeline():
                self.conn.execute(_LOCKED_SHARED)
                cur = self.conn.execute(_paramstyle(sql), params)
            return cur.fetchall()
        except BaseException:
            self.rollback()
            raise

    def executemany(self, sql: str, rows: Any) -> psycopg.Cursor[Any]:
        self._flush()
        cur = self.conn.cursor()
        cur.executemany(_paramstyle(sql), list(rows))
        return cur

    def one(self, sql: str, params: Any = ()) -> PgRow | None:
        return self.execute(sql, params).fetchone()

    def all(self, sql: str, params: Any = ()) -> list[PgRow]:
        return self.execute(sql, params).fetchall()

    def iterate(self, sql: str, params: Any = ()) -> Iterator[PgRow]:
        """Streamed through a server-side cursor, so other queries may run between its rows;
        outside a transaction WITH HOLD (the server keeps the result, the client a batch)."""
        return self._stream(sql, params, _row_factory)

    def tuples(self, sql: str, params: Any = ()) -> Iterator[tuple[Any, ...]]:
        """As `iterate`, the rows as plain tuples."""
        return self._stream(sql, params, tuple_row)

    def _stream(self, sql: str, params: Any, rows: Any) -> Iterator[Any]:
        self._flush()
        with self.conn.cursor(name=f"stream_{uuid.uuid4().hex}", withhold=not self._tx_open,
                              row_factory=rows) as cur:
            cur.itersize = ITER_SIZE
            cur.execute(_paramstyle(sql) if params else sql, params or None)
            yield from cur

    def _retrying(self, run: Any) -> Any:
        """Run a statement; a read outside a transaction whose connection dropped is run once
        more on a new one (it changes nothing, so it is safe to repeat)."""
        from byokctl.store import is_disconnect

        try:
            return run()
        except psycopg.OperationalError as exc:
            if self._tx_open or not is_disconnect(exc):
                raise  # inside a transaction: the caller learns of it, nothing is redone
            self._reconnect()
            return run()

    def _reconnect(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()
        self.conn = _connect(self.dsn)
        if self.busy_ms is not None:
            self.set_busy_timeout(self.busy_ms)

    def set_busy_timeout(self, ms: int) -> None:
        self.busy_ms = int(ms)
        self.conn.execute(f"SET lock_timeout = {self.busy_ms}")

    # -- engine operations --------------------------------------------------------------------
    def schema_version(self) -> int:
        from byokctl.store import migrations

        return int(self.scalar(f"SELECT count(*) FROM {migrations.RECORD_TABLE}") or 0)  # noqa: S608

    @contextmanager
    def lenient(self, errors: str = "replace") -> Iterator[PostgresStore]:
        """PostgreSQL refuses text that is not valid UTF-8 at write: nothing to be lenient about."""
        yield self

    def file_check(self) -> _NoFileCheck:
        """PostgreSQL checksums and checks its own pages (and `vault check` reads every row it
        MACs); there is no file of ours to check."""
        return _NoFileCheck()

    def discard(self) -> None:
        """Drop what `create_store` made (a vault whose creation failed), then close."""
        from byokctl.store import migrations

        with contextlib.suppress(psycopg.Error):
            self.rollback()
            tables = ", ".join(migrations.TABLES + (migrations.RECORD_TABLE,))
            self.conn.execute(f"DROP TABLE IF EXISTS {tables} CASCADE")
        self.close()

    def purge_wal(self) -> bool:
        """VACUUM the tables that hold ciphertext, so the dead row versions of removed or
        rotated keys leave the table's pages now (not at autovacuum's leisure); outside a
        transaction only. WAL segments and archived WAL keep old row images until they are
        recycled: the README's team-vault section says what that means for backups."""
        if self.in_transaction:
            return False
        self.conn.execute("VACUUM keys")
        self.conn.execute("VACUUM data_keys")
        return True

    def close(self) -> None:
        self.conn.close()


class _NoFileCheck:
    """`vault check`'s storage check where the engine keeps its own: finds nothing."""

    def start(self) -> None:
        """Nothing to start."""

    def cancel(self) -> None:
        """Nothing to stop."""

    def join(self) -> None:
        """Nothing to wait for."""

    def damage(self) -> list[str]:
        return []


def _connect(dsn: str) -> psycopg.Connection[Any]:
    """A connection with byokctl's settings; a server that cannot be reached is an error
    naming the database without its password (exit 12)."""
    try:
        conn = psycopg.connect(dsn, autocommit=True, row_factory=_row_factory,
                               connect_timeout=CONNECT_TIMEOUT_S, application_name="byokctl")
    except psycopg.OperationalError as exc:
        reason = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, dsn)
        raise Conflict(f"Cannot connect to the vault database {display(dsn)}: {reason}",
                       "check that the server is up and the URL, user and password are right "
                       "(password from the URL, $PGPASSWORD or ~/.pgpass)") from None
    except psycopg.ProgrammingError:
        raise Conflict("The vault database URL cannot be read",
                       "write it as postgresql://user@host/dbname or as libpq key=value pairs") from None
    conn.adapters.register_loader("numeric", _IntegralNumeric)
    conn.execute(f"SET lock_timeout = {int(_engines.BUSY_TIMEOUT_MS)}; "
                 f"SET idle_in_transaction_session_timeout = {IDLE_IN_TX_TIMEOUT_MS}")
    return conn


def _tables(conn: psycopg.Connection[Any]) -> set[str]:
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    return {r[0] for r in rows}


class _PgMigrator:
    """Runs a migration's SQLite DDL, translated, inside the open transaction."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Any = ()) -> Any:
        from byokctl.store.migrations import postgres_ddl

        translated = postgres_ddl(sql)
        if translated is None:
            return self.conn.cursor()  # an SQLite PRAGMA: nothing to do here
        return self.conn.execute(_paramstyle(translated) if params else translated, params or None)

    def executescript(self, sql: str) -> None:
        from byokctl.store.migrations import statements

        for statement in statements(sql):
            self.execute(statement)


def migrate(store: PostgresStore) -> int:
    """Run the migrations the database lacks, under the write lock; the schema version."""
    from byokctl import clock
    from byokctl.store import migrations

    with store.tx():
        store.conn.execute(migrations.RECORD_DDL)
        done = {r[0] for r in store.conn.execute(f"SELECT name FROM {migrations.RECORD_TABLE}")}  # noqa: S608
        migrator = _PgMigrator(store.conn)
        for name, fn in migrations.pending(done):
            fn(migrator)
            store.conn.execute(f"INSERT INTO {migrations.RECORD_TABLE} (name, applied_at) "  # noqa: S608
                               "VALUES (%s, %s)", (name, clock.stamp()))
            done.add(name)
    return len(done & set(migrations.DECLARED))


@contextmanager
def _opening(dsn: str) -> Iterator[PostgresStore]:
    """A new connection's store, for the checks and migrations of opening it: closed if they
    fail, and its schema known to be there once they pass."""
    store = PostgresStore(dsn, _connect(dsn))
    try:
        yield store
    except BaseException:
        store.close()
        raise
    store.schema_ready = True


def create_store(dsn: str) -> PostgresStore:
    """Create a vault's schema in an empty database; refuse one that holds anything."""
    with _opening(dsn) as store:
        tables = _tables(store.conn)
        if "schema_migrations" in tables or "meta" in tables:
            raise Conflict(f"{store.location} already holds a byokctl vault",
                           "use it, or point --db at an empty database")
        if tables:
            raise Conflict(f"{store.location} is not empty (tables: {', '.join(sorted(tables)[:5])})",
                           "create an empty database for the vault (`createdb byokctl`) and point "
                           "--db at it")
        migrate(store)
    return store


def copy_target(dsn: str) -> PostgresStore:
    """A database to copy a vault into: empty (the schema is made here), or holding only the
    blank schema an interrupted copy left; anything else is refused."""
    with _opening(dsn) as store:
        tables = _tables(store.conn)
        if not tables:
            migrate(store)
        elif "schema_migrations" in tables and "meta" in tables:
            if store.schema_version() < SCHEMA_LATEST:
                migrate(store)
            if not store.transfer.is_blank():
                raise Conflict(f"{store.location} already holds a vault",
                               "copy to a new file or an empty database")
        else:
            raise Conflict(f"{store.location} is not empty (tables: {', '.join(sorted(tables)[:5])})",
                           "copy to an empty database (`createdb byokctl`)")
    return store


def open_store(dsn: str) -> PostgresStore:
    """Open the vault in a database; migrates one of an older schema, never creates one."""
    with _opening(dsn) as store:
        tables = _tables(store.conn)
        if "schema_migrations" not in tables or "meta" not in tables:
            raise NotFound(f"No vault in the database {store.location}",
                           "create one with `byokctl init --db URL`")
        version = store.schema_version()
        if version > SCHEMA_LATEST:
            raise Integrity(f"{store.location} was written by a newer byokctl (schema {version}, "
                            f"this one knows {SCHEMA_LATEST})", "upgrade byokctl to use it")
        if version < SCHEMA_LATEST:
            migrate(store)
    return store


__all__ = ["PostgresStore", "create_store", "display", "open_store"]
