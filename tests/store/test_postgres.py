"""The PostgreSQL engine against a real server (tests/pg_server.py): schema, rows, locking."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import psycopg
import pytest

from byokctl import store
from byokctl.errors import Conflict, Integrity, NotFound
from byokctl.store import migrations, postgres

PG_TYPES = {"text": "TEXT", "bigint": "INTEGER", "double precision": "REAL", "bytea": "BLOB"}


def pg_columns(url: str) -> dict[str, list[str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position").fetchall()
    out: dict[str, list[str]] = {}
    for table, column, kind, nullable in rows:
        out.setdefault(table, []).append(f"{column} {PG_TYPES[kind]}" + (" NN" if nullable == "NO" else ""))
    return out


def sqlite_columns(path: Path) -> dict[str, list[str]]:
    conn = sqlite3.connect(path)
    out = {}
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        # a PRIMARY KEY column is NOT NULL on PostgreSQL whatever it says
        out[name] = [f"{r[1]} {r[2]}" + (" NN" if r[3] or r[5] else "")
                     for r in conn.execute(f"PRAGMA table_info({name})")]
    conn.close()
    return out


def test_one_list_of_migrations_gives_both_engines_the_same_tables_and_columns(pg_url, tmp_path):
    pg = postgres.create_store(pg_url)
    try:
        assert pg.schema_version() == store.SCHEMA_LATEST == migrations.LATEST
        names = [r["name"] for r in pg.all("SELECT name FROM schema_migrations ORDER BY applied_at, name")]
    finally:
        pg.close()
    assert sorted(names) == sorted(migrations.DECLARED)
    (tmp_path / "v").mkdir(mode=0o700)
    lite = store.create_store(tmp_path / "v" / "vault.db")
    lite.close()
    assert pg_columns(pg_url) == sqlite_columns(tmp_path / "v" / "vault.db")


def test_init_refuses_a_database_that_holds_something_else_or_a_vault(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id int)")
    with pytest.raises(Conflict, match="is not empty"):
        postgres.create_store(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP TABLE invoices")
    postgres.create_store(pg_url).close()
    with pytest.raises(Conflict, match="already holds a byokctl vault"):
        postgres.create_store(pg_url)


def test_opening_an_empty_database_or_a_newer_schema_is_refused(pg_url):
    with pytest.raises(NotFound, match="No vault in the database"):
        postgres.open_store(pg_url)
    postgres.create_store(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES ('m999_future', 'x')")
    with pytest.raises(Integrity, match=f"newer byokctl \\(schema {store.SCHEMA_LATEST + 1}"):
        postgres.open_store(pg_url)


def test_an_older_schema_is_migrated_on_open(pg_url):
    postgres.create_store(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:  # back to what m001..m005 left
        conn.execute("DROP TABLE reservations")
        conn.execute("ALTER TABLE orgs DROP COLUMN shortfall")
        conn.execute("DELETE FROM schema_migrations WHERE name = 'm006_reservations'")
    s = postgres.open_store(pg_url)
    try:
        assert s.schema_version() == store.SCHEMA_LATEST
        assert s.scalar("SELECT count(*) FROM reservations") == 0
    finally:
        s.close()


def test_rows_types_and_placeholders_read_as_on_sqlite(pg_url):
    s = postgres.create_store(pg_url)
    try:
        with s.tx():
            s.execute("INSERT INTO data_keys (purpose, state, wrapped, created_at) VALUES (?, ?, ?, ?)",
                      ("secrets", "active", b"\x00\xffbytes", "2026-01-01"))
            s.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [("a%", "1"), ("b?", "2")])
        row = s.one("SELECT id, wrapped FROM data_keys WHERE purpose = ?", ("secrets",))
        assert row["wrapped"] == row[1] == b"\x00\xffbytes" and isinstance(row["id"], int)
        assert dict(row).keys() == {"id", "wrapped"}
        assert s.meta("a%") == "1" and s.meta("b?") == "2"
        assert s.scalar("SELECT value FROM meta WHERE key LIKE ?", ("a%",)) == "1"
        # the sum of integers is numeric on PostgreSQL: it comes back an int, as on SQLite
        total = s.scalar("SELECT sum(id) FROM data_keys")
        assert total == row["id"] and type(total) is int
    finally:
        s.close()


def test_a_streamed_query_lets_other_queries_run_between_its_rows(pg_url, monkeypatch):
    monkeypatch.setattr(postgres, "ITER_SIZE", 50)  # several batches from a few rows
    s = postgres.create_store(pg_url)
    try:
        with s.tx():
            s.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                          [(f"k{i:05}", str(i)) for i in range(postgres.ITER_SIZE * 2 + 5)])
        seen = 0
        for row in s.iterate("SELECT key, value FROM meta WHERE key LIKE ? ORDER BY key", ("k%",)):
            assert s.meta(row["key"]) == row["value"]  # a second query mid-stream
            seen += 1
        assert seen == postgres.ITER_SIZE * 2 + 5
    finally:
        s.close()


def test_writers_on_two_connections_take_turns_and_a_long_wait_is_busy(pg_url):
    first = postgres.create_store(pg_url)
    second = postgres.open_store(pg_url)
    second.conn.execute("SET lock_timeout = 100")
    try:
        with first.tx():
            first.set_meta("holder", "first")
            started = time.monotonic()
            with pytest.raises(psycopg.errors.LockNotAvailable) as caught, second.tx():
                pass
            assert store.is_busy(caught.value) and time.monotonic() - started < 5
        # released at commit: the second writer goes ahead and sees the first one's write
        order: list[str] = []
        second.conn.execute("SET lock_timeout = 10000")

        def write_second() -> None:
            with second.tx():
                order.append(f"second saw {second.meta('holder')}")
                second.set_meta("holder", "second")

        with first.tx():
            t = threading.Thread(target=write_second)
            t.start()
            time.sleep(0.15)  # the second writer is waiting for the lock meanwhile
            order.append("first")
            first.set_meta("holder", "first again")
        t.join(5)
        assert order == ["first", "second saw first again"]
        assert first.meta("holder") == "second"
    finally:
        first.close()
        second.close()


def test_messages_name_the_database_without_its_password(tmp_path):
    url = f"postgresql://alice:s3cr3t-pw@/byok?host={tmp_path}/nowhere"
    assert postgres.display(url) == f"postgresql://alice:***@/byok?host={tmp_path}/nowhere"
    assert postgres.display("host=db.example port=6432 dbname=v user=bob password=pw") == \
        "postgresql://bob:***@db.example:6432/v"
    with pytest.raises(Conflict) as caught:
        store.open_any(url)
    assert "s3cr3t-pw" not in str(caught.value) and "alice:***@" in caught.value.what


def test_a_failed_creation_is_discarded_and_the_database_can_be_used_again(pg_url):
    s = postgres.create_store(pg_url)
    s.discard()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0
    postgres.create_store(pg_url).close()


def test_the_table_list_names_every_table_the_migrations_make(tmp_path):
    (tmp_path / "v").mkdir(mode=0o700)
    lite = store.create_store(tmp_path / "v" / "vault.db")
    try:
        names = {r[0] for r in lite.tuples("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        lite.close()
    assert names == {*migrations.TABLES, migrations.RECORD_TABLE}


def test_a_pg_dump_holds_no_secret_and_no_old_ciphertext(pg_server, pg_url, monkeypatch):
    """`pg_dump` (the real one) of a team vault: no API key in any encoding, and the
    ciphertext of a rotated or removed key is gone from the tables, which were vacuumed."""
    import base64
    import json
    import subprocess

    from conftest import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, run

    monkeypatch.setenv("BYOKCTL_DB", pg_url)
    rotated = "sk-ant-api03-rotated-" + "Q1w2E3r4T5" * 4
    for argv in (("init",), ("org", "create", "acme", "--plan", "growth")):
        assert run(*argv).exit_code == 0
    ids = {}
    for provider, secret in (("anthropic", ANTHROPIC_TEST_KEY), ("openai", OPENAI_TEST_KEY)):
        r = run("key", "add", "acme", "--provider", provider, "--from-stdin", "--json", input=secret)
        assert r.exit_code == 0, r.output
        ids[provider] = json.loads(r.stdout)["id"]
    conn = psycopg.connect(pg_url)
    old = {p: conn.execute("SELECT ciphertext FROM keys WHERE id = %s", (i,)).fetchone()[0]
           for p, i in ids.items()}
    conn.close()
    assert run("key", "rotate", ids["anthropic"], "--from-stdin", "--no-test", input=rotated).exit_code == 0
    assert run("key", "remove", ids["openai"], "--yes").exit_code == 0

    dump = subprocess.run([str(pg_server.bindir / "pg_dump"), pg_url], capture_output=True,
                          timeout=60, check=True).stdout
    for secret in (ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, rotated):
        raw = secret.encode()
        for form in (raw, base64.b64encode(raw), raw.hex().encode(), secret[12:30].encode()):
            assert form not in dump
    for ciphertext in old.values():  # bytea is dumped as hex
        assert ciphertext.hex().encode() not in dump
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT last_vacuum FROM pg_stat_user_tables "
                            "WHERE relname = 'keys'").fetchone()[0] is not None


def _terminate(url: str, pid: int) -> None:
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_dropped_connection_is_reopened_for_a_read_and_reported_in_a_write(pg_url):
    s = postgres.create_store(pg_url)
    try:
        s.set_meta("k", "v")
        _terminate(pg_url, s.conn.info.backend_pid)
        assert s.meta("k") == "v"  # a read outside a transaction: run again on a new connection
        with pytest.raises(psycopg.OperationalError) as caught, s.tx():
            _terminate(pg_url, s.conn.info.backend_pid)
            s.set_meta("k", "w")  # inside a transaction: never repeated behind the caller's back
        assert store.is_disconnect(caught.value)
        assert s.meta("k") == "v"  # the transaction's write was not made
        with s.tx():  # and the next transaction starts on a new connection
            s.set_meta("k", "x")
        assert s.meta("k") == "x"
    finally:
        s.close()
    assert not store.is_disconnect(sqlite3.OperationalError("database is locked"))


def test_vault_status_names_the_engine_and_the_database_without_its_password(pg_url, monkeypatch):
    import json

    from conftest import run

    monkeypatch.setenv("BYOKCTL_DB", pg_url.replace("postgresql://postgres@", "postgresql://postgres:pw-123@"))
    assert run("init").exit_code == 0
    r = run("vault", "status", "--json")
    doc = json.loads(r.stdout)
    assert doc["engine"] == "postgresql" and doc["path"].startswith("postgresql://postgres:***@/")
    assert "pw-123" not in r.output and "pw-123" not in run("vault", "status").output
    monkeypatch.delenv("BYOKCTL_DB")
    assert run("init").exit_code == 0
    assert json.loads(run("vault", "status", "--json").stdout)["engine"] == "sqlite"


def _round_trips(conn: psycopg.Connection, work) -> int:
    """How many times `work()` made the client wait for the server: libpq's own trace of the
    protocol, counting the messages that end a round trip (Sync, or a simple Query)."""
    import tempfile

    from psycopg.pq import Trace

    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS)
        try:
            work()
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        return sum(1 for line in trace
                   if line.startswith("F\t") and line.split("\t")[2].strip() in ("Sync", "Query"))


def test_a_credit_change_costs_five_round_trips(pg_url, monkeypatch, cli):
    """BEGIN with the write lock and the data keys (a rekey elsewhere may have changed them) is
    one round trip, and the writes nobody reads (the row's new MAC, the audit entry, the chain
    head) go with the next statement or with COMMIT: a credit change, once the org is found,
    waits for the server five times, not thirteen (the 16-writer benchmark's throughput is
    bounded by the time each writer holds the lock)."""
    from byokctl.services import audit, credits
    from byokctl.services.context import open_context

    monkeypatch.setenv("BYOKCTL_MASTER_KEY", "A" * 43 + "=")
    for args in (["init"], ["org", "create", "acme", "--credits", "0"]):
        assert cli("--db", pg_url, *args).exit_code == 0
    ctx = open_context(pg_url)
    credits.add(ctx, "acme", 1)  # warm: the data keys are unlocked, statements prepared

    def under_lock() -> None:
        with ctx.write():
            credits.change(ctx, "acme", add=5)
            audit.record(ctx, "credits.add", org="acme", target="acme", after={"added": 5})

    assert _round_trips(ctx.store.conn, under_lock) <= 5
    assert credits.show(ctx, "acme").balance == 6
    ctx.store.close()
    assert cli("--db", pg_url, "audit", "verify").exit_code == 0
    assert cli("--db", pg_url, "vault", "check").exit_code == 0


def test_a_platform_s_own_call_waits_for_the_server_twice(pg_url, monkeypatch, cli, emulator):
    """`Vault.client()` + `record()` on an org's own key: the request's rows (org, platform
    settings, every key it may use) in one pipeline, checked and opened without being read
    again; the record in one more: the write lock taken shared, then one statement with the
    key's guarded update and the usage rows, one transaction. Fourteen at first, then four."""
    from conftest import anthropic_answer, pg_byok

    from byokctl import Vault

    master, byok = pg_byok(pg_url, monkeypatch, cli, emulator)
    response = anthropic_answer(emulator)
    with Vault.open(pg_url, master_key=master) as v:
        def call() -> None:
            with v.client("acme") as c:
                c.record(response)

        call()  # warm: the vault unlocked, statements prepared
        conn = v._context(None).store.conn
        assert _round_trips(conn, call) <= 2
    usage = json.loads(cli("usage", "show", "acme", "--json").stdout)
    assert usage["totals"]["calls"] == 2
    keys = json.loads(cli("key", "list", "acme", "--json").stdout)
    assert [k["last_used_at"] is not None for k in keys if k["id"] == byok["org_key"]] == [True]
    assert cli("vault", "check").exit_code == 0


def test_held_writes_run_in_order_before_the_next_statement_and_vanish_on_rollback(pg_url):
    s = postgres.create_store(pg_url)
    try:
        with s.tx():
            s.set_meta("held", "one")
            s.set_meta("held", "two")  # held, in order: the later value wins
            assert s.meta("held") == "two"  # the read sends the held writes first
            s.set_meta("held", "three")
        assert s.meta("held") == "three"  # the last held write went with COMMIT
        with pytest.raises(RuntimeError), s.tx():
            s.set_meta("held", "never")
            raise RuntimeError("abandon")
        assert s.meta("held") == "three"
        with s.tx():  # a held write that fails is raised by the statement that carries it
            s.execute_later("INSERT INTO meta (key, value) VALUES (?, ?)", ("held", "duplicate"))
            with pytest.raises(psycopg.errors.UniqueViolation):
                s.meta("anything")
            s.rollback()
        assert s.meta("held") == "three" and not s.in_transaction
    finally:
        s.close()


@pytest.mark.parametrize("how", ["org delete", "vault rekey"])
def test_a_cascaded_delete_or_a_rekey_leaves_no_old_ciphertext_in_a_pg_dump(pg_server, pg_url, monkeypatch,
                                                                              how):
    """The PostgreSQL twin of tests/crosscutting/test_secrets.py's purge checks (which read the
    SQLite file and its WAL): an org's keys deleted by cascade, or every key re-encrypted by
    `vault rekey`, leave neither the old ciphertext nor the retired wrapped data key in the
    tables' dump (the tables are vacuumed after the purge)."""
    import json
    import subprocess

    from conftest import ANTHROPIC_TEST_KEY, run

    monkeypatch.setenv("BYOKCTL_DB", pg_url)
    for argv in (("init",), ("org", "create", "acme", "--plan", "growth")):
        assert run(*argv).exit_code == 0
    r = run("key", "add", "acme", "--provider", "anthropic", "--from-stdin", "--json",
            input=ANTHROPIC_TEST_KEY)
    assert r.exit_code == 0, r.output
    with psycopg.connect(pg_url) as conn:
        old = [conn.execute("SELECT ciphertext FROM keys").fetchone()[0],
               conn.execute("SELECT wrapped FROM data_keys ORDER BY id LIMIT 1").fetchone()[0]]
    args = ("org", "delete", "acme", "--yes") if how == "org delete" else ("vault", "rekey")
    assert run(*args).exit_code == 0
    dump = subprocess.run([str(pg_server.bindir / "pg_dump"), pg_url], capture_output=True,
                          timeout=60, check=True).stdout
    assert old[0].hex().encode() not in dump
    if how == "vault rekey":
        assert old[1].hex().encode() not in dump
        shown = json.loads(run("key", "list", "acme", "--json").stdout)
        assert [k["fingerprint"] for k in shown] == [json.loads(r.stdout)["fingerprint"]]
    assert run("vault", "check").exit_code == 0
