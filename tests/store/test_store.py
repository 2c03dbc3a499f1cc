"""The vault file: schema from an empty file, pragmas, file modes, path precedence, and clean
refusals (file untouched) for files that are not a usable vault."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from byokctl import store
from byokctl.store import migrations

# "column TYPE" + " NN" (NOT NULL) + " PKn" (primary-key position), as m001 declares them.
EXPECTED_TABLES = {
    "meta": ["key TEXT PK1", "value TEXT NN"],
    "data_keys": ["id INTEGER PK1", "purpose TEXT NN", "state TEXT NN", "wrapped BLOB NN",
                  "created_at TEXT NN"],
    "orgs": ["slug TEXT PK1", "name TEXT NN", "plan TEXT NN", "credits INTEGER NN",
             "provider TEXT NN", "model TEXT", "base_url TEXT", "fallback TEXT NN",
             "budget_monthly_usd REAL", "grace_until TEXT", "grace_reason TEXT",
             "created_at TEXT NN", "updated_at TEXT NN", "mac TEXT", "shortfall INTEGER NN"],
    "members": ["org TEXT NN PK1", "email TEXT NN PK2", "role TEXT NN", "created_at TEXT NN",
                "mac TEXT"],
    "keys": ["id TEXT PK1", "scope TEXT NN", "org TEXT", "member TEXT", "provider TEXT NN",
             "version INTEGER NN", "data_key_id INTEGER NN", "nonce BLOB NN", "ciphertext BLOB NN",
             "hint TEXT NN", "fingerprint TEXT NN", "status TEXT NN", "test_result TEXT",
             "created_at TEXT NN", "rotated_at TEXT", "last_used_at TEXT", "last_tested_at TEXT",
             "mac TEXT", "from_env TEXT"],
    "usage": ["id INTEGER PK1", "ts TEXT NN", "org TEXT NN", "member TEXT", "actor TEXT NN",
              "mode TEXT NN", "provider TEXT", "model TEXT", "key_id TEXT", "fingerprint TEXT",
              "fallback_reason TEXT", "input_tokens INTEGER NN", "output_tokens INTEGER NN",
              "cost_usd REAL NN", "catalog_version TEXT", "credits_charged INTEGER NN",
              "latency_ms INTEGER", "outcome TEXT NN"],
    "audit": ["seq INTEGER PK1", "ts TEXT NN", "actor TEXT NN", "action TEXT NN", "org TEXT",
              "target TEXT", "before TEXT", "after TEXT", "mac TEXT NN", "os_user TEXT"],
    "endpoint_approvals": ["org TEXT NN PK1", "member TEXT NN PK2", "provider TEXT NN PK3",
                           "base_url TEXT NN PK4", "approved_by TEXT NN", "approved_as TEXT NN",
                           "approved_at TEXT NN", "mac TEXT"],
    "reservations": ["id INTEGER PK1", "org TEXT NN", "mode TEXT NN", "credits INTEGER NN",
                     "cost_usd REAL NN", "created_at TEXT NN", "expires_at TEXT NN"],
    "schema_migrations": ["name TEXT PK1", "applied_at TEXT NN"],
    "usage_daily": ["day TEXT NN PK1", "org TEXT NN PK2", "mode TEXT NN PK3", "provider TEXT NN PK4",
                    "model TEXT NN PK5", "calls INTEGER NN", "errors INTEGER NN",
                    "input_tokens INTEGER NN", "output_tokens INTEGER NN", "cost_usd REAL NN",
                    "credits_charged INTEGER NN"],
    "usage_daily_all": ["day TEXT NN PK1", "mode TEXT NN PK2", "provider TEXT NN PK3",
                        "model TEXT NN PK4", "calls INTEGER NN", "errors INTEGER NN",
                        "input_tokens INTEGER NN", "output_tokens INTEGER NN", "cost_usd REAL NN",
                        "credits_charged INTEGER NN"],
}
# name: (table, columns (None = an expression), unique)
EXPECTED_INDEXES = {
    "keys_slot": ("keys", ["scope", None, None, "provider"], True),
    "keys_data_key": ("keys", ["data_key_id"], False),
    "usage_org_ts": ("usage", ["org", "ts"], False),
    "usage_ts": ("usage", ["ts"], False),
    "audit_org": ("audit", ["org", "seq"], False),
    "audit_action": ("audit", ["action", "seq"], False),
    "keys_org_member": ("keys", ["org", "member"], False),
    "members_email": ("members", ["email"], False),
    "reservations_org": ("reservations", ["org", "expires_at"], False),
    "usage_daily_org": ("usage_daily", ["org", "day"], False),
}

# The SQLite engine itself: its file, pragmas and schema (tests/store/test_postgres.py: the other).
pytestmark = pytest.mark.sqlite_only


def schema_of(conn: sqlite3.Connection) -> tuple[dict, dict]:
    tables = {}
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        tables[name] = [
            f"{r[1]} {r[2]}" + (" NN" if r[3] else "") + (f" PK{r[5]}" if r[5] else "")
            for r in conn.execute(f"PRAGMA table_info({name})")
        ]
    indexes = {}
    for name, table in conn.execute(
        "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    ):
        unique = next(r[2] for r in conn.execute(f"PRAGMA index_list({table})") if r[1] == name)
        cols = [r[2] for r in conn.execute(f"PRAGMA index_info({name})")]
        indexes[name] = (table, cols, bool(unique))
    return tables, indexes


def test_migrations_on_an_empty_file_give_exactly_the_schema(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "empty.db", isolation_level=None)
    migrations.apply(conn)
    tables, indexes = schema_of(conn)
    assert tables == EXPECTED_TABLES
    assert indexes == EXPECTED_INDEXES
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    assert version == store.SCHEMA_LATEST == migrations.LATEST
    declared = sorted(n for n in vars(migrations) if n[:1] == "m" and n[1:4].isdigit() and n[4] == "_")
    assert declared == migrations.DECLARED and len(declared) == migrations.LATEST
    # Applying again is a no-op (each migration is recorded by name).
    migrations.apply(conn)
    assert schema_of(conn) == (tables, indexes)


def test_created_vault_has_the_schema_and_pragmas(cli, vault: Path) -> None:
    s = store.open_store(vault)
    try:
        assert schema_of(s.conn) == (EXPECTED_TABLES, EXPECTED_INDEXES)
        assert s.scalar("PRAGMA journal_mode") == "wal"
        assert s.scalar("PRAGMA foreign_keys") == 1
        assert s.scalar("PRAGMA secure_delete") == 1
        assert s.scalar("PRAGMA busy_timeout") == store.BUSY_TIMEOUT_MS
        assert s.scalar("PRAGMA user_version") == store.SCHEMA_LATEST
    finally:
        s.close()
    # The schema version is reported, too.
    assert json.loads(cli("vault", "status", "--json").stdout)["schema_version"] == store.SCHEMA_LATEST


def test_a_schema_1_vault_is_upgraded_in_place_on_open(cli, vault: Path) -> None:
    assert cli("org", "create", "acme").exit_code == 0
    conn = sqlite3.connect(vault, isolation_level=None)  # back to what m001 alone left
    conn.execute("DROP INDEX keys_org_member")
    conn.execute("DROP INDEX members_email")
    for table in ("orgs", "members", "keys"):
        conn.execute(f"ALTER TABLE {table} DROP COLUMN mac")
    conn.execute("DROP TABLE endpoint_approvals")
    conn.execute("ALTER TABLE audit DROP COLUMN os_user")
    conn.execute("DROP TABLE reservations")
    conn.execute("ALTER TABLE orgs DROP COLUMN shortfall")
    conn.execute("DROP TABLE usage_daily")
    conn.execute("DROP TABLE usage_daily_all")
    conn.execute("ALTER TABLE keys DROP COLUMN from_env")
    conn.execute("DELETE FROM schema_migrations WHERE name != 'm001_initial'")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    r = cli("org", "list", "--json")
    assert r.exit_code == 0, r.output
    assert [o["slug"] for o in json.loads(r.stdout)] == ["acme"]
    s = store.open_store(vault)
    try:
        assert schema_of(s.conn) == (EXPECTED_TABLES, EXPECTED_INDEXES)
        assert s.scalar("PRAGMA user_version") == store.SCHEMA_LATEST
    finally:
        s.close()
    assert cli("audit", "verify").exit_code == 0


def test_file_modes_0600_in_a_0700_dir_even_with_a_lax_umask(cli, home: Path) -> None:
    old = os.umask(0o022)
    try:
        r = cli("init")
        assert r.exit_code == 0, r.output
        db = home / "vault.db"
        s = store.open_store(db)
        try:  # -wal and -shm exist while a connection holds the file open
            with s.tx():
                s.set_meta("probe", "x")
            for suffix in ("", "-wal", "-shm"):
                f = Path(str(db) + suffix)
                assert f.exists(), suffix
                assert stat.S_IMODE(f.stat().st_mode) == 0o600, suffix
        finally:
            s.close()
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
    finally:
        os.umask(old)


def test_path_precedence_db_flag_then_env_db_then_home_then_platform_dir(
    cli, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def created_at(*args: str) -> Path:
        r = cli(*args, "init", "--json")
        assert r.exit_code == 0, r.output
        return Path(json.loads(r.stdout)["path"])

    # $BYOKCTL_HOME (set by the test isolation)
    assert created_at() == home / "vault.db"
    # $BYOKCTL_DB beats $BYOKCTL_HOME
    monkeypatch.setenv("BYOKCTL_DB", str(tmp_path / "env" / "v.db"))
    assert created_at() == tmp_path / "env" / "v.db"
    # --db beats both
    assert created_at("--db", str(tmp_path / "flag.db")) == tmp_path / "flag.db"
    # neither: the platform's user data dir
    monkeypatch.delenv("BYOKCTL_DB")
    monkeypatch.delenv("BYOKCTL_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert created_at() == tmp_path / "xdg" / "byokctl" / "vault.db"
    # and a command reading the vault finds each one the same way
    monkeypatch.setenv("BYOKCTL_DB", str(tmp_path / "env" / "v.db"))
    r = cli("vault", "status", "--json")
    assert json.loads(r.stdout)["path"] == str(tmp_path / "env" / "v.db")


def test_init_refuses_an_existing_file(cli, vault: Path) -> None:
    before = vault.read_bytes()
    r = cli("init")
    assert r.exit_code == 12, r.output
    assert "already exists" in r.stderr
    assert vault.read_bytes() == before


def _other_schema(path: Path) -> None:
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE notes (body TEXT)")
    c.commit()
    c.close()


def _newer_schema(path: Path) -> None:
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    c.execute(f"PRAGMA user_version = {store.SCHEMA_LATEST + 1}")
    c.commit()
    c.close()


@pytest.mark.parametrize(
    ("make", "code", "words"),
    [
        (lambda p: p.write_bytes(os.urandom(8192)), 13, "not a usable byokctl vault"),
        (lambda p: p.write_bytes(b""), 13, "the file is empty"),
        (lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200), 13, "not a usable byokctl vault"),
        (_other_schema, 13, "no byokctl schema"),
        (_newer_schema, 13, "newer byokctl"),
        (lambda p: p.mkdir(), 13, "is a directory"),
    ],
    ids=["garbage", "empty", "bad-header", "other-sqlite", "newer-schema", "directory"],
)
def test_unusable_files_give_a_clean_error_and_are_not_modified(cli, tmp_path: Path, make, code: int,
                                                                words: str) -> None:
    path = tmp_path / "x.db"
    make(path)
    before = None if path.is_dir() else path.read_bytes()
    for args in (("org", "list"), ("audit", "log"), ("vault", "status")):
        r = cli("--db", str(path), *args)
        assert r.exit_code == code, r.output
        assert words in r.stderr
        assert "Traceback" not in r.output and r.stdout == ""
    if before is not None:
        assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.db"]  # no -wal/-shm left behind


def test_missing_vault_is_not_found_and_not_created(cli, tmp_path: Path) -> None:
    path = tmp_path / "nope.db"
    r = cli("--db", str(path), "org", "list", "--json")
    assert r.exit_code == 3, r.output
    assert json.loads(r.stderr)["error"]["code"] == "not-found"
    assert "byokctl init" in json.loads(r.stderr)["error"]["message"]
    assert not path.exists()


def test_a_damaged_page_is_an_integrity_error_not_a_crash(cli, vault: Path) -> None:
    for i in range(5):
        assert cli("org", "create", f"org{i}").exit_code == 0
    conn = sqlite3.connect(vault)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'orgs'").fetchone()[0]
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    data = bytearray(vault.read_bytes())
    data[(root - 1) * page:root * page] = b"\x5a" * page  # the orgs table's page, scribbled over
    vault.write_bytes(bytes(data))
    r = cli("org", "list", "--json")
    assert r.exit_code == 13, r.output
    err = json.loads(r.stderr)["error"]
    assert err["code"] == "integrity" and "damaged" in err["message"]
    assert "Traceback" not in r.output
    assert vault.read_bytes() == bytes(data)


def test_a_vault_made_by_sqlite_utils_migrations_is_adopted_and_upgraded(tmp_path: Path) -> None:
    """byokctl before 8/11 ran the same migrations through sqlite-utils' `Migrations`, which
    recorded them in `_sqlite_migrations`: such a vault (here at schema 4) is upgraded, its
    record moved into `schema_migrations` (applied_at kept) and the old table dropped."""
    from sqlite_utils import Database, Migrations

    path = tmp_path / "old.db"
    old = Migrations("byokctl")
    for fn in (migrations.m001_initial, migrations.m002_lookup_indexes,
               migrations.m003_endpoint_approvals, migrations.m004_row_macs):
        old()(fn)
    db = Database(path)
    old.apply(db)
    before = dict(db.execute("SELECT name, applied_at FROM _sqlite_migrations").fetchall())
    db.close()
    assert len(before) == 4
    path.chmod(0o600)
    tmp_path.chmod(0o700)
    s = store.open_store(path)
    try:
        assert schema_of(s.conn) == (EXPECTED_TABLES, EXPECTED_INDEXES)
        assert s.scalar("PRAGMA user_version") == store.SCHEMA_LATEST
        record = {r["name"]: r["applied_at"] for r in s.all("SELECT * FROM schema_migrations")}
    finally:
        s.close()
    assert list(record) == migrations.DECLARED
    assert {n: record[n] for n in before} == before


def test_an_interrupted_migration_leaves_the_vault_as_it_was(tmp_path: Path, monkeypatch) -> None:
    """All pending migrations run in one transaction: one that fails undoes the others."""
    conn = sqlite3.connect(tmp_path / "v.db", isolation_level=None)

    def broken(db) -> None:
        db.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("disk pulled")

    monkeypatch.setattr(migrations, "_FUNCTIONS", [*migrations._FUNCTIONS[:-1], broken])
    with pytest.raises(RuntimeError):
        migrations.apply(conn)
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
