"""The store: the only part of byokctl that speaks SQL.

`Store` is one vault database. Services reach its tables through named query families, one
per table family (`store.orgs`, `store.members`, `store.keys`, `store.usage`, `store.audit`,
`store.data_keys`, `store.approvals`, `store.reservations`, `store.rows` for the MACed rows of
any table) plus `store.meta()` / `store.set_meta()`, and group writes in `store.tx()`. Nothing
outside `byokctl/store/` writes SQL, holds a connection or catches a driver's exception: this
is the seam a second engine plugs into.

The families' SQL is written in the dialect SQLite and PostgreSQL share (`?` placeholders,
`ON CONFLICT`, `RETURNING`, no engine functions); what differs between engines (opening,
locking, pragmas, file checks, the fast scans of `vault check`) lives on the engine class.
Rows come back as mappings from column name to value (`Row`); callers never index by position.

This module is the SQLite engine: the vault's file, where it lives, how it is opened.
Plain `sqlite3`; the migration code is imported only when a schema migration is due.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from byokctl.errors import Conflict, Integrity, NotFound
from byokctl.files import UnsafeFile, check_private_dir, check_private_file
from byokctl.store.base import Row as Row  # re-exported: what the families return
from byokctl.store.base import Store

if TYPE_CHECKING:
    from byokctl.store.filecheck import FileCheck

BUSY_TIMEOUT_MS = 30_000
PURGE_WAIT_MS = 2_000  # how long a WAL purge waits for another process's reader
SCHEMA_LATEST = 8  # kept equal to migrations.LATEST by a test; opening a vault imports no migration code


def default_path() -> Path:
    """`$BYOKCTL_DB`, else `vault.db` in `$BYOKCTL_HOME`, else in the platform's data dir."""
    if env := os.environ.get("BYOKCTL_DB"):
        return Path(env).expanduser()
    if home := os.environ.get("BYOKCTL_HOME"):
        return Path(home).expanduser() / "vault.db"
    from platformdirs import user_data_dir

    return Path(user_data_dir("byokctl", appauthor=False)) / "vault.db"


_DATABASE_URL = re.compile(r"^(postgresql|postgres)://|^\s*(host|hostaddr|dbname|user|port|service|"
                           r"sslmode|passfile)\s*=", re.IGNORECASE)


def is_database_url(db: object) -> bool:
    """Whether `--db` / `$BYOKCTL_DB` names a PostgreSQL database (a libpq URL or key=value
    DSN) rather than a vault file."""
    return bool(_DATABASE_URL.match(str(db)))


def target(db: str | os.PathLike[str] | None) -> str | Path:
    """The vault `--db` (else `$BYOKCTL_DB`, else the default file) names: a database URL as
    given, or a file path."""
    given = db if db else os.environ.get("BYOKCTL_DB")
    if given and is_database_url(given):
        return str(given)
    return resolve_path(db)


def describe(where: str | os.PathLike[str]) -> str:
    """A vault `target` for messages: the file's path, or the database URL with any password
    shown as `***`."""
    if isinstance(where, str) and is_database_url(where):
        from byokctl.store.postgres import display

        return display(where)
    return str(where)


def open_any(db: str | os.PathLike[str] | None) -> Store:
    """Open the vault `db` names, on whichever engine holds it (see `target`)."""
    where = target(db)
    if isinstance(where, str):
        from byokctl.store import postgres

        return postgres.open_store(where)
    return open_store(where)


def create_any(db: str | os.PathLike[str] | None) -> Store:
    """Create a vault where `db` names (see `target`): a new file, or the schema in an empty
    PostgreSQL database."""
    where = target(db)
    if isinstance(where, str):
        from byokctl.store import postgres

        return postgres.create_store(where)
    return create_store(where)


def copy_target(to: str | os.PathLike[str]) -> Store:
    """The store a vault is copied into: a new file, an empty PostgreSQL database, or a
    blank vault (the schema alone) that an interrupted copy left behind; never one holding
    anything else."""
    where = target(to)
    if isinstance(where, str):
        from byokctl.store import postgres

        return postgres.copy_target(where)
    if not where.exists():
        return create_store(where)
    try:
        store = open_store(where)
    except UnsafeFile:  # refused as everywhere else
        raise
    except Integrity:  # a file, but no vault
        raise Conflict(f"{where} exists and is not a vault", "copy to a new file") from None
    if not store.transfer.is_blank():
        store.close()
        raise Conflict(f"{where} already holds a vault", "copy to a new file or an empty database")
    return store


def password_in(db: str | os.PathLike[str] | None) -> bool:
    """Whether `db` is a database URL or DSN carrying a password (which belongs in
    $PGPASSWORD or ~/.pgpass, not on a command line that `ps` shows to every user)."""
    if db is None or not is_database_url(db):
        return False
    from byokctl.store.postgres import has_password

    return has_password(str(db))


def resolve_path(db: str | os.PathLike[str] | None) -> Path:
    return Path(db).expanduser() if db else default_path()


@dataclass
class SQLiteStore(Store):
    """A vault in one SQLite file (WAL mode): one connection, writers serialised by SQLite."""

    path: Path
    conn: sqlite3.Connection
    _depth: int = field(default=0, repr=False)  # open savepoints (nested `tx()`)
    immutable: bool = False  # opened read-only from storage that refuses writes (`_reopen_read_only`)
    busy_ms: int | None = field(default=None, repr=False)  # set_busy_timeout's; None: BUSY_TIMEOUT_MS
    engine = "sqlite"

    @property
    def location(self) -> str:
        return str(self.path)

    # -- transactions ---------------------------------------------------------------------
    @property
    def in_transaction(self) -> bool:
        """Whether a transaction (ours or an outer caller's) is open on this store."""
        return self.conn.in_transaction

    @contextmanager
    def tx(self) -> Iterator[Store]:
        """A write transaction, taken up front (BEGIN IMMEDIATE) so it cannot deadlock.

        Inside another one (`apply` runs many service calls in one transaction) it is a
        savepoint: a failure undoes only its own part, and the outer owner commits or rolls back.
        """
        if self.conn.in_transaction:
            with self._savepoint():
                yield self
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    def rollback(self) -> None:
        """Abandon the open transaction, if any (after a failure the caller cannot undo)."""
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    @contextmanager
    def _savepoint(self) -> Iterator[None]:
        self._depth += 1
        name = f"nested_{self._depth}"
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.conn.execute(f"ROLLBACK TO {name}")
            self.conn.execute(f"RELEASE {name}")
            raise
        else:
            self.conn.execute(f"RELEASE {name}")
        finally:
            self._depth -= 1

    # -- SQL primitives: for the families in this package only -----------------------------
    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        return self.conn.executemany(sql, rows)

    def one(self, sql: str, params: Any = ()) -> sqlite3.Row | None:
        return self.conn.execute(sql, params).fetchone()

    def all(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: Any = ()) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def iterate(self, sql: str, params: Any = ()) -> Iterator[sqlite3.Row]:
        return self.conn.execute(sql, params)

    def tuples(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        """The rows as plain tuples, read as iterated (the fast scans: no mapping per row)."""
        cur = self.conn.cursor()
        cur.row_factory = None
        return cur.execute(sql, params)

    # -- engine operations ------------------------------------------------------------------
    def schema_version(self) -> int:
        """The schema version the file is at (SQLite keeps it in `PRAGMA user_version`)."""
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    @contextmanager
    def lenient(self, errors: str = "replace") -> Iterator[Store]:
        """Reads inside it decode TEXT that is not UTF-8 (only a write outside byokctl puts it
        there) with `errors` ("replace", or "surrogateescape" to keep the bytes for a MAC check
        to refuse) instead of failing. SQLite-specific (its `text_factory`): a PostgreSQL
        engine refuses such text at write, so there it only yields."""
        previous = self.conn.text_factory

        def decode(raw: bytes) -> str:
            return raw.decode("utf-8", errors)

        self.conn.text_factory = decode
        try:
            yield self
        finally:
            self.conn.text_factory = previous

    def file_check(self) -> FileCheck:
        """The whole file's own check (`PRAGMA quick_check`), on a second read-only connection
        in a thread: `start()` it, `join()` it, read `damage()`. SQLite-specific."""
        from byokctl.store.filecheck import FileCheck

        return FileCheck(self.path, self.immutable)

    def discard(self) -> None:
        """Close and delete the vault's file and side files: a vault whose creation failed."""
        self.conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def purge_wal(self) -> bool:
        """Copy the WAL into the file and truncate it, so old page images (and the ciphertext
        in them) leave the disk now rather than at some later checkpoint; call it after any
        write that deletes or replaces ciphertext (secure_delete only zeroes the file's current
        pages). False if a reader in another process blocks it (the next checkpoint finishes
        the job), or inside an open transaction (the caller purges after its commit)."""
        if self.conn.in_transaction:
            return False
        self.conn.execute(f"PRAGMA busy_timeout = {PURGE_WAIT_MS}")  # never hang behind a reader
        try:
            busy, _, _ = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            self.conn.execute(f"PRAGMA busy_timeout = {self._busy_ms()}")
        return busy == 0

    def _busy_ms(self) -> int:
        return BUSY_TIMEOUT_MS if self.busy_ms is None else self.busy_ms

    def set_busy_timeout(self, ms: int) -> None:
        self.busy_ms = int(ms)
        self.conn.execute(f"PRAGMA busy_timeout = {self.busy_ms}")

    def close(self) -> None:
        self.conn.close()


def _connect(path: Path, immutable: bool = False) -> sqlite3.Connection:
    if immutable:  # read-only media: SQLite cannot make the -shm a WAL reader needs
        conn = sqlite3.connect(path.absolute().as_uri() + "?mode=ro&immutable=1", uri=True,
                               timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    else:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA secure_delete = ON")
    return conn


def is_busy(exc: BaseException) -> bool:
    """The engine gave up waiting for another connection's lock (after the busy timeout):
    SQLite's SQLITE_BUSY, PostgreSQL's lock_timeout (55P03), deadlock (40P01), serialisation
    failure (40001) or cancelled statement (57014)."""
    if getattr(exc, "sqlstate", None) in ("55P03", "40P01", "40001", "57014"):
        return True
    return str(getattr(exc, "sqlite_errorname", "")).startswith("SQLITE_BUSY")


def is_error(exc: BaseException) -> bool:
    """Any failure the engine raised (a damaged page, a value it cannot hand over, a lock)."""
    return isinstance(exc, sqlite3.Error)


def is_unreadable(exc: BaseException) -> bool:
    """A scan failed on a value the engine cannot hand over as asked (SQLite: text that is not
    UTF-8, a BLOB `json_array()` refuses; only a write outside byokctl stores such a value):
    the caller reads the rest leniently (`Store.lenient`)."""
    return isinstance(exc, sqlite3.OperationalError)


def is_disconnect(exc: BaseException) -> bool:
    """The connection to a database vault was lost (the server restarted or ended the session,
    the network failed). Never true for a vault file; psycopg is not imported to tell."""
    import sys

    psycopg = sys.modules.get("psycopg")
    if psycopg is None or not isinstance(exc, psycopg.OperationalError):
        return False
    state = getattr(exc, "sqlstate", None)
    return state is None or state.startswith(("08", "57P"))


def disconnect_error(db: str | os.PathLike[str]) -> Conflict:
    return Conflict(
        f"The connection to the vault database {describe(db)} was lost", "check that the server is "
        "up and run the command again; a change under way then was made whole or not at all "
        "(`byokctl audit log` shows which)")


def busy_error(path: str | os.PathLike[str], ms: int | None = None) -> Conflict:
    """The error for a lock held past the busy timeout (`ms`; default BUSY_TIMEOUT_MS)."""
    waited = (BUSY_TIMEOUT_MS if ms is None else ms) / 1000
    return Conflict(
        f"The vault {describe(path)} is busy: another process has held its lock for over "
        f"{waited:g} seconds", "let it finish (or stop it) and run the command again"
    )


class StorageError(Conflict):
    """The disk refuses the write (full, read-only): the file itself is intact (exit 12)."""


_STORAGE_ERRORS = ("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CANTOPEN")
_FREE_ENOUGH = 256 * 1024  # less than this free is a full disk, as far as SQLite is concerned


def is_storage(exc: BaseException) -> bool:
    """An SQLite failure of the storage under the file rather than of its content."""
    return str(getattr(exc, "sqlite_errorname", "")).startswith(_STORAGE_ERRORS)


def storage_problem(path: Path) -> tuple[str, str] | None:
    """Why `path` (a vault or key file, existing or to be made) cannot be written, and the
    fix: a read-only file system, a full disk, or a file or directory read-only for us."""
    path = Path(path).absolute()
    target = path if path.exists() else path.parent
    try:
        vfs = os.statvfs(target)
    except OSError:
        return None
    if vfs.f_flag & os.ST_RDONLY:
        return ("its file system is mounted read-only", "remount it read-write, or copy the vault to "
                "writable storage and point --db at the copy")
    if vfs.f_bavail * vfs.f_frsize < _FREE_ENOUGH:
        return "the disk holding it is full", "free some space and run the command again"
    for p in (path, *(Path(f"{path}{x}") for x in SIDE_FILES), path.parent):
        if p.exists() and not os.access(p, os.W_OK):
            return f"{p} is read-only for you", f"run `chmod u+w {p}` and run the command again"
    return None


def storage_error(path: Path, exc: BaseException | None = None,
                  guess: bool = True) -> StorageError | None:
    """The StorageError for a write that `path`'s storage refused; None if nothing explains it
    (with `guess`, the error's own code may: SQLite's or the OS's, about `path` itself)."""
    why = storage_problem(path)
    if why is None and guess:
        name = str(getattr(exc, "sqlite_errorname", ""))
        err = getattr(exc, "errno", None)
        if name.startswith("SQLITE_FULL") or err in (errno.ENOSPC, errno.EDQUOT):
            why = "the disk holding it is full", "free some space and run the command again"
        elif name.startswith("SQLITE_READONLY") or err == errno.EROFS:
            why = ("it is read-only", "make it writable (or copy the vault to writable storage and "
                   "point --db at the copy) and run the command again")
        else:
            return None
    if why is None:
        return None
    problem, fix = why
    return StorageError(f"Cannot write to {path}: {problem}",
                        f"{fix} (the file is intact; nothing was changed)")


def _not_a_vault(path: Path, why: str) -> Integrity:
    return Integrity(
        f"{path} is not a usable byokctl vault ({why})", "point --db or $BYOKCTL_DB at the right "
        "file, or restore it from a backup"
    )


def _make_private_file(path: Path) -> None:
    """Create the vault file 0600 in a 0700 directory before SQLite opens it."""
    parent = path.parent
    if not parent.exists():
        parent.mkdir(parents=True, mode=0o700)
        parent.chmod(0o700)  # mkdir's mode is filtered by the umask
    check_private_dir(parent, "vault")
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY, 0o600)
    os.close(fd)


# Files SQLite keeps beside the vault: another user's copy of one would be read as ours.
SIDE_FILES = ("-wal", "-shm", "-journal")


def check_private_vault(path: Path, *, main: bool = True) -> None:
    """The vault's directory and files are ours alone (SPEC §2); else UnsafeFile (exit 13).
    `main=False` leaves the vault file itself to `open_store`, which first says whether the
    file is a vault at all."""
    check_private_dir(path.absolute().parent, "vault")
    if main:
        check_private_file(path, os.stat(path), "vault file")
    for suffix in SIDE_FILES:
        side = Path(f"{path}{suffix}")
        try:
            st = os.lstat(side)
        except FileNotFoundError:
            continue
        check_private_file(side, st, "vault's side file")


def create_store(path: Path) -> Store:
    """Create a new vault file with the current schema. Refuses to touch an existing file."""
    if path.exists():
        raise Conflict(f"{path} already exists", "use it, or choose another path with --db")
    _make_private_file(path)
    try:
        check_private_vault(path)  # no -wal or -shm planted beside it
    except UnsafeFile:
        path.unlink()
        raise
    old_umask = os.umask(0o077)  # -wal and -shm are created by SQLite itself
    try:
        conn = _connect(path)
        conn.execute("PRAGMA journal_mode = WAL")
        from byokctl.store import migrations

        migrations.apply(conn)
    finally:
        os.umask(old_umask)
    return SQLiteStore(path, conn)


def _probe(conn: sqlite3.Connection) -> tuple[int, object, int]:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    return version, has_meta, conn.execute("PRAGMA page_size").fetchone()[0]


def _reopen_read_only(path: Path, exc: sqlite3.DatabaseError) -> sqlite3.Connection:
    """A vault on storage that refuses writes (a read-only mount or directory, a full disk)
    that SQLite cannot even open for reading: on read-only storage, read it as an immutable
    file when that is safe (no -wal holding commits the file lacks), so commands that only
    read keep working; else
    the StorageError that says what to fix. Never "restore it from a backup": it is intact."""
    trouble = storage_error(path, exc)
    if trouble is None:
        raise _not_a_vault(path, str(exc)) from None
    wal = Path(f"{path}-wal")
    read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY) or not os.access(path.parent, os.W_OK)
    if not read_only or (wal.exists() and wal.stat().st_size):
        raise trouble from None  # a full disk others may free meanwhile: not immutable
    conn = _connect(path, immutable=True)
    try:
        _probe(conn)
    except sqlite3.DatabaseError:
        conn.close()
        raise trouble from None
    return conn


def open_store(path: Path) -> Store:
    """Open an existing vault; never creates, migrates only a byokctl file of an older schema."""
    if not path.exists():
        raise NotFound(f"No vault at {path}", "create one with `byokctl init` (or pass --db)")
    if path.is_dir():
        raise _not_a_vault(path, "it is a directory")
    check_private_vault(path, main=False)  # before SQLite reads a -wal or -journal
    old_umask = os.umask(0o077)
    immutable = False
    try:
        conn = _connect(path)
        try:
            version, has_meta, page_size = _probe(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if is_busy(exc):
                raise busy_error(path) from None
            if not is_storage(exc):
                raise _not_a_vault(path, str(exc)) from None
            conn = _reopen_read_only(path, exc)
            version, has_meta, page_size = _probe(conn)
            immutable = True
        if version == 0 or not has_meta:
            conn.close()
            why = "the file is empty" if path.stat().st_size == 0 else "no byokctl schema"
            raise _not_a_vault(path, why)
        if (size := path.stat().st_size) % page_size:
            # SQLite reads a cut last page as zeros: rows would come back blank, not as errors.
            conn.close()
            raise _not_a_vault(path, f"it was cut short: {size} bytes is not a whole number of "
                                     f"{page_size}-byte pages")
        if version > SCHEMA_LATEST:
            conn.close()
            raise Integrity(
                f"{path} was written by a newer byokctl (schema {version}, this one knows "
                f"{SCHEMA_LATEST})", "upgrade byokctl to use it"
            )
        try:
            check_private_file(path, os.stat(path), "vault file")
        except UnsafeFile:
            conn.close()
            raise
        with contextlib.suppress(sqlite3.OperationalError):  # read-only media: reads still work
            conn.execute("PRAGMA journal_mode = WAL")
        if version < SCHEMA_LATEST:
            from byokctl.store import migrations

            migrations.apply(conn)
    finally:
        os.umask(old_umask)
    return SQLiteStore(path, conn, immutable=immutable)
