"""Named, append-only schema migrations (sqlite-utils `Migrations`).

Never edit a migration that has shipped: add `m00N_...` below it. Each migration also sets
`PRAGMA user_version` to its ordinal, so opening a current vault costs one pragma read and
never imports sqlite-utils.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlite_utils import Database, Migrations

migrations = Migrations("byokctl")
DECLARED: list[str] = []  # byokctl's own migrations, in order: the schema version is their count


def migration(fn: Callable[[Database], None]) -> Callable[[Database], None]:
    """Register `fn` with sqlite-utils and count it here (its registry is private)."""
    DECLARED.append(fn.__name__)
    return migrations()(fn)


@migration
def m001_initial(db: Database) -> None:
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
def m002_lookup_indexes(db: Database) -> None:
    """Per-org lookups independent of the vault's size: an org's keys (`key list ORG`, `org
    show`, `member list`, and the (org, member) foreign key that `member remove` and `org
    delete` cascade through), and a member's orgs by email (`--as`). Plain statements, not
    executescript, so they run inside the migration's transaction."""
    db.execute("CREATE INDEX IF NOT EXISTS keys_org_member ON keys (org, member)")
    db.execute("CREATE INDEX IF NOT EXISTS members_email ON members (email)")
    db.execute("PRAGMA user_version = 2")


@migration
def m003_endpoint_approvals(db: Database) -> None:
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
def m004_row_macs(db: Database) -> None:
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
def m005_audit_os_user(db: Database) -> None:
    """The OS account behind an entry made with `--as` (the actor stays the member). NULL for
    older entries and the operator's own, whose MACs do not cover it, so they still verify."""
    db.execute("ALTER TABLE audit ADD COLUMN os_user TEXT")
    db.execute("PRAGMA user_version = 5")


@migration
def m006_reservations(db: Database) -> None:
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


LATEST = len(DECLARED)


def apply(conn) -> None:  # noqa: ANN001 - a sqlite3.Connection
    migrations.apply(Database(conn))
