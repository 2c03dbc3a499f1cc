"""Named, append-only schema migrations: one list, run on both engines.

Never edit a migration that has shipped: add `m00N_...` below it. A migration is a function
of a `Migrator` (`execute(sql, params)`, `executescript(sql)`) written in SQLite's DDL; the
PostgreSQL engine runs the same text through `postgres_ddl` (types and the few functions that
differ), so there is one list and one schema. The vault's own table `schema_migrations`
records which migrations ran, by name; the schema version is their count. On SQLite, `PRAGMA
user_version` mirrors that count so that opening a current vault costs one pragma read.

Vaults made before this runner recorded their migrations in sqlite-utils' `_sqlite_migrations`
table (whose `Migrations` this module followed); the first run copies those names into
`schema_migrations` and drops that table, in the same transaction as any migration still due.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any, Protocol


class Migrator(Protocol):
    """What a migration is given: statements run inside the migration's transaction."""

    def execute(self, sql: str, params: Any = ()) -> Any: ...

    def executescript(self, sql: str) -> None: ...


Migration = Callable[[Migrator], None]
DECLARED: list[str] = []  # byokctl's migrations, in order: the schema version is their count
_FUNCTIONS: list[Migration] = []

RECORD_TABLE = "schema_migrations"
RECORD_DDL = (f"CREATE TABLE IF NOT EXISTS {RECORD_TABLE} (name TEXT PRIMARY KEY, "
              "applied_at TEXT NOT NULL)")
# The vault's tables, children before parents (what dropping a half-made vault removes).
TABLES = ("usage_daily_all", "usage_daily", "usage", "reservations", "audit", "endpoint_approvals",
          "keys", "members", "orgs", "data_keys", "meta")
LEGACY_TABLE = "_sqlite_migrations"  # sqlite-utils' record, in vaults of byokctl before 8/11


def migration(fn: Migration) -> Migration:
    """Append `fn` to the list (its name is what the vault records)."""
    DECLARED.append(fn.__name__)
    _FUNCTIONS.append(fn)
    return fn


@migration
def m001_initial(db: Migrator) -> None:
    db.executescript(
        """
        CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        -- Wrapped (AES-GCM under the master key) 256-bit keys. purpose 'secrets' encrypts
        -- API keys; 'mac' keys the audit chain and fingerprints and survives `vault rekey`.
        CREATE TABLE data_keys (
            id INTEGER PRIMARY KEY,
            purpose TEXT NOT NULL CHECK (purpose IN ('secrets', 'mac')),
            state TEXT NOT NULL CHECK (state IN ('active', 'next')),
            wrapped BLOB NOT NULL,
            created_at TEXT NOT NULL
        );
        -- plan/provider/fallback carry no CHECK on purpose: an unknown value in the store
        -- must be readable so that resolution can fail closed on it (SPEC §3.7).
        CREATE TABLE orgs (
            slug TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            plan TEXT NOT NULL,
            credits INTEGER NOT NULL DEFAULT 0 CHECK (credits >= 0),
            provider TEXT NOT NULL DEFAULT 'platform',
            model TEXT,
            base_url TEXT,
            fallback TEXT NOT NULL DEFAULT 'never',
            budget_monthly_usd REAL,
            grace_until TEXT,
            grace_reason TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE members (
            org TEXT NOT NULL REFERENCES orgs(slug) ON DELETE CASCADE,
            email TEXT NOT NULL,
            role TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (org, email)
        );
        CREATE TABLE keys (
            id TEXT PRIMARY KEY,
            scope TEXT NOT NULL CHECK (scope IN ('org', 'member', 'platform')),
            org TEXT REFERENCES orgs(slug) ON DELETE CASCADE,
            member TEXT,
            provider TEXT NOT NULL,
            version INTEGER NOT NULL DEFAULT 1,
            data_key_id INTEGER NOT NULL REFERENCES data_keys(id),
            nonce BLOB NOT NULL,
            ciphertext BLOB NOT NULL,
            hint TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'active',
            test_result TEXT,
            created_at TEXT NOT NULL,
            rotated_at TEXT,
            last_used_at TEXT,
            last_tested_at TEXT,
            FOREIGN KEY (org, member) REFERENCES members(org, email) ON DELETE CASCADE
        );
        CREATE UNIQUE INDEX keys_slot ON keys (scope, ifnull(org, ''), ifnull(member, ''), provider);
        CREATE INDEX keys_data_key ON keys (data_key_id);
        CREATE TABLE usage (
            id INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,
            org TEXT NOT NULL,
            member TEXT,
            actor TEXT NOT NULL,
            mode TEXT NOT NULL,
            provider TEXT,
            model TEXT,
            key_id TEXT,
            fingerprint TEXT,
            fallback_reason TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL NOT NULL DEFAULT 0,
            catalog_version TEXT,
            credits_charged INTEGER NOT NULL DEFAULT 0,
            latency_ms INTEGER,
            outcome TEXT NOT NULL
        );
        CREATE INDEX usage_org_ts ON usage (org, ts);
        CREATE INDEX usage_ts ON usage (ts);
        CREATE TABLE audit (
            seq INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            org TEXT,
            target TEXT,
            before TEXT,
            after TEXT,
            mac TEXT NOT NULL
        );
        CREATE INDEX audit_org ON audit (org, seq);
        CREATE INDEX audit_action ON audit (action, seq);
        PRAGMA user_version = 1;
        """
    )


@migration
def m002_lookup_indexes(db: Migrator) -> None:
    """Per-org lookups independent of the vault's size: an org's keys (`key list ORG`, `org
    show`, `member list`, and the (org, member) foreign key that `member remove` and `org
    delete` cascade through), and a member's orgs by email (`--as`). Plain statements, not
    executescript, so they run inside the migration's transaction."""
    db.execute("CREATE INDEX IF NOT EXISTS keys_org_member ON keys (org, member)")
    db.execute("CREATE INDEX IF NOT EXISTS members_email ON members (email)")
    db.execute("PRAGMA user_version = 2")


@migration
def m003_endpoint_approvals(db: Migrator) -> None:
    """Where a member's personal key may be sent besides the provider's official endpoint: one
    row per (org, member, provider, normalised base_url) the member (approved_as 'owner') or
    the platform operator ('operator') approved. Keyed by the member's slot, not a key id, so an
    approval outlives a rotation; removing the member (or the org) removes their approvals."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS endpoint_approvals ("
        " org TEXT NOT NULL,"
        " member TEXT NOT NULL,"
        " provider TEXT NOT NULL,"
        " base_url TEXT NOT NULL,"
        " approved_by TEXT NOT NULL,"
        " approved_as TEXT NOT NULL CHECK (approved_as IN ('owner', 'operator')),"
        " approved_at TEXT NOT NULL,"
        " PRIMARY KEY (org, member, provider, base_url),"
        " FOREIGN KEY (org, member) REFERENCES members(org, email) ON DELETE CASCADE)"
    )
    db.execute("PRAGMA user_version = 3")


@migration
def m004_row_macs(db: Migrator) -> None:
    """A `mac` column on the rows that decide where keys go and what money moves (orgs,
    members, keys, endpoint approvals; the platform record's MAC is a meta value). A migration
    holds no master key, so it cannot MAC an existing vault's rows: it marks the vault
    `row_macs_pending`, and the first command that unlocks it MACs them (services/integrity.py
    `adopt_legacy`, which checks that the vault really predates row MACs). A new vault has no
    rows yet."""
    for table in ("orgs", "members", "keys", "endpoint_approvals"):
        db.execute(f"ALTER TABLE {table} ADD COLUMN mac TEXT")
    if db.execute("SELECT 1 FROM meta WHERE key = 'vault_id'").fetchone():
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('row_macs_pending', '1')")
    db.execute("PRAGMA user_version = 4")


@migration
def m005_audit_os_user(db: Migrator) -> None:
    """The OS account behind an entry made with `--as` (the actor stays the member). NULL for
    older entries and the operator's own, whose MACs do not cover it, so they still verify."""
    db.execute("ALTER TABLE audit ADD COLUMN os_user TEXT")
    db.execute("PRAGMA user_version = 5")


@migration
def m006_reservations(db: Migrator) -> None:
    """What calls in flight have reserved, and what an org owes. A call reserves its estimated
    maximum cost before it reaches the provider (admission counts what others reserved) and
    settles it after; a reservation left by a killed process stops counting at `expires_at`
    (the call's deadline plus a margin). `orgs.shortfall` is the part of charges that the
    balance could not cover: kept, never dropped, and paid first by the next `credits add`."""
    db.execute("""
        CREATE TABLE IF NOT EXISTS reservations (
            id INTEGER PRIMARY KEY,
            org TEXT NOT NULL,
            mode TEXT NOT NULL CHECK (mode IN ('platform', 'byok')),
            credits INTEGER NOT NULL DEFAULT 0 CHECK (credits >= 0),
            cost_usd REAL NOT NULL DEFAULT 0 CHECK (cost_usd >= 0),
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL
        )""")
    db.execute("CREATE INDEX IF NOT EXISTS reservations_org ON reservations (org, expires_at)")
    db.execute("ALTER TABLE orgs ADD COLUMN shortfall INTEGER NOT NULL DEFAULT 0 "
               "CHECK (shortfall >= 0)")
    db.execute("PRAGMA user_version = 6")


@migration
def m007_usage_daily(db: Migrator) -> None:
    """Per-day totals of usage by org, mode, provider and model (`usage_daily`), and the same
    across orgs (`usage_daily_all`, for reports over every org), kept in the same transaction
    as each usage record (store/usage.py), so `usage show` reads days × groups instead of
    every record; NULL provider/model are '-' as `usage show` prints them. Filled here from
    the records already kept, which stay for what the totals lack (`--by member`, times of
    day)."""
    db.execute("""
        CREATE TABLE IF NOT EXISTS usage_daily (
            day TEXT NOT NULL,
            org TEXT NOT NULL,
            mode TEXT NOT NULL,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            calls INTEGER NOT NULL DEFAULT 0,
            errors INTEGER NOT NULL DEFAULT 0,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL NOT NULL DEFAULT 0,
            credits_charged INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (day, org, mode, provider, model)
        )""")
    db.execute("CREATE INDEX IF NOT EXISTS usage_daily_org ON usage_daily (org, day)")
    db.execute("""
        INSERT INTO usage_daily (day, org, mode, provider, model, calls, errors, input_tokens,
                                 output_tokens, cost_usd, credits_charged)
        SELECT substr(ts, 1, 10), org, mode, coalesce(provider, '-'), coalesce(model, '-'),
               count(*), sum(CASE WHEN outcome != 'ok' THEN 1 ELSE 0 END), sum(input_tokens),
               sum(output_tokens), sum(cost_usd), sum(credits_charged)
        FROM usage GROUP BY substr(ts, 1, 10), org, mode, coalesce(provider, '-'),
                            coalesce(model, '-')""")
    db.execute("""
        CREATE TABLE IF NOT EXISTS usage_daily_all (
            day TEXT NOT NULL,
            mode TEXT NOT NULL,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            calls INTEGER NOT NULL DEFAULT 0,
            errors INTEGER NOT NULL DEFAULT 0,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL NOT NULL DEFAULT 0,
            credits_charged INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (day, mode, provider, model)
        )""")
    db.execute("""
        INSERT INTO usage_daily_all (day, mode, provider, model, calls, errors, input_tokens,
                                     output_tokens, cost_usd, credits_charged)
        SELECT day, mode, provider, model, sum(calls), sum(errors), sum(input_tokens),
               sum(output_tokens), sum(cost_usd), sum(credits_charged)
        FROM usage_daily GROUP BY day, mode, provider, model""")
    db.execute("PRAGMA user_version = 7")


@migration
def m008_key_env_names(db: Migrator) -> None:
    """The NAME of the environment variable a key's secret was read from (`apply`'s `from_env`,
    `key add --from-env`), never its value, so that `export` writes the name the operator
    uses. NULL for keys entered otherwise (and older ones): export invents a name for those."""
    db.execute("ALTER TABLE keys ADD COLUMN from_env TEXT")
    db.execute("PRAGMA user_version = 8")


LATEST = len(DECLARED)


def pending(done: set[str]) -> Iterator[tuple[str, Migration]]:
    """The migrations not in `done`, in order, with their names."""
    for name, fn in zip(DECLARED, _FUNCTIONS, strict=True):
        if name not in done:
            yield name, fn


def statements(script: str) -> Iterator[str]:
    """The complete SQL statements of `script`, one at a time (comments kept with the next)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf.strip()
            buf = ""
    if buf.strip() and not all(ln.strip().startswith("--") or not ln.strip() for ln in buf.splitlines()):
        yield buf.strip()


class _SQLiteMigrator:
    """Runs a migration's statements on an SQLite connection inside the open transaction
    (`executescript` would commit it first)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def executescript(self, sql: str) -> None:
        for statement in statements(sql):
            self.conn.execute(statement)


def applied_sqlite(conn: sqlite3.Connection) -> list[str]:
    """The names of the migrations an SQLite vault records (either record table)."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                         "AND name IN (?, ?)", (RECORD_TABLE, LEGACY_TABLE))}
    names: list[str] = []
    if RECORD_TABLE in tables:
        names += [r[0] for r in conn.execute(f"SELECT name FROM {RECORD_TABLE}")]  # noqa: S608
    if LEGACY_TABLE in tables:
        names += [r[0] for r in conn.execute(
            f"SELECT name FROM {LEGACY_TABLE} WHERE migration_set = 'byokctl'")]  # noqa: S608
    return names


def apply(conn: sqlite3.Connection) -> int:
    """Run the migrations an SQLite vault lacks, all in one transaction taken up front (BEGIN
    IMMEDIATE), so two processes opening an old vault migrate it once; the new version."""
    from byokctl import clock

    migrator = _SQLiteMigrator(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        done = set(applied_sqlite(conn))
        legacy = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                              (LEGACY_TABLE,)).fetchone()
        conn.execute(RECORD_DDL)
        if legacy:  # adopt sqlite-utils' record, then drop it
            conn.execute(f"INSERT INTO {RECORD_TABLE} (name, applied_at) "  # noqa: S608
                         f"SELECT name, applied_at FROM {LEGACY_TABLE} "
                         "WHERE migration_set = 'byokctl' ON CONFLICT (name) DO NOTHING")
            conn.execute(f"DROP TABLE {LEGACY_TABLE}")
        for name, fn in list(pending(done)):
            fn(migrator)
            conn.execute(f"INSERT INTO {RECORD_TABLE} (name, applied_at) VALUES (?, ?)",  # noqa: S608
                         (name, clock.stamp()))
            done.add(name)
        version = len(done & set(DECLARED))
        conn.execute(f"PRAGMA user_version = {version}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return version


# -- PostgreSQL: the same migrations, their DDL translated -------------------------------------
_PG_REWRITES = [
    (re.compile(r"\bINTEGER PRIMARY KEY\b"), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
    (re.compile(r"\bifnull\("), "coalesce("),
    (re.compile(r"\bINSERT OR REPLACE INTO meta \(key, value\) VALUES \(([^)]*)\)"),
     r"INSERT INTO meta (key, value) VALUES (\1) ON CONFLICT (key) DO UPDATE SET value = excluded.value"),
]
_PRAGMA = re.compile(r"^\s*PRAGMA\b", re.IGNORECASE)


def postgres_ddl(sql: str) -> str | None:
    """One statement of a migration as PostgreSQL runs it; None for an SQLite-only PRAGMA."""
    if _PRAGMA.match(sql):
        return None
    for pattern, replacement in _PG_REWRITES:
        sql = pattern.sub(replacement, sql)
    return sql
