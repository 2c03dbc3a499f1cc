"""`vault copy --to`: SQLite to PostgreSQL and back, unchanged, checked, refusing a target in use."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, connect

pytestmark = pytest.mark.sqlite_only  # the source is the vault file; the targets are both engines


def sealed(db: Path | str) -> list[tuple]:
    conn = connect(db)
    try:
        return [tuple(r) for r in conn.execute(
            "SELECT id, data_key_id, nonce, ciphertext, mac FROM keys ORDER BY id").fetchall()]
    finally:
        conn.close()


def chain(db: Path | str) -> list[tuple]:
    conn = connect(db)
    try:
        return [tuple(r) for r in conn.execute("SELECT seq, mac FROM audit ORDER BY seq").fetchall()]
    finally:
        conn.close()


@pytest.fixture
def populated(cli, vault, emulator) -> Path:
    """A vault with orgs, members, keys of each scope, usage and an audit chain."""
    for argv in (("org", "create", "acme", "--plan", "growth", "--credits", "50"),
                 ("org", "create", "beta", "--credits", "20"),
                 ("member", "add", "acme", "bob@acme.com", "--role", "staffing"),
                 ("platform", "set-default", "openai", "--model", "gpt-5-nano", "--base-url",
                  emulator.openai_base_url)):
        r = cli(*argv)
        assert r.exit_code == 0, r.output
    for args, secret in ((["acme", "--provider", "anthropic"], ANTHROPIC_TEST_KEY),
                         (["--platform", "--provider", "openai"], OPENAI_TEST_KEY),
                         (["acme", "--provider", "openai", "--member", "bob@acme.com"], OPENAI_TEST_KEY)):
        r = cli("key", "add", *args, "--from-stdin", input=secret)
        assert r.exit_code == 0, r.output
    r = cli("ask", "beta", "hello", "--no-stream")  # platform mode: usage and a charge
    assert r.exit_code == 0, r.output
    return vault


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
def test_a_round_trip_through_postgresql_leaves_every_byte_and_the_chain_as_it_was(
        cli, populated, pg_url, tmp_path, monkeypatch):
    r = cli("vault", "copy", "--to", pg_url, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["rows"]["keys"] == 3 and doc["rows"]["usage"] == 1 and doc["audit_checked"] >= 8
    assert sealed(pg_url) == sealed(populated) and chain(pg_url) == chain(populated)

    monkeypatch.setenv("BYOKCTL_DB", pg_url)  # the same master key (the keyring's) opens it
    assert json.loads(cli("org", "list", "--json").stdout)[0]["slug"] == "acme"
    assert cli("audit", "verify").exit_code == 0

    back = tmp_path / "back" / "vault.db"
    r = cli("vault", "copy", "--to", str(back))
    assert r.exit_code == 0, r.output
    assert "the copy checks clean" in r.stdout
    assert sealed(back) == sealed(populated) and chain(back) == chain(populated)
    monkeypatch.setenv("BYOKCTL_DB", str(back))
    assert cli("vault", "check").exit_code == 0
    r = cli("org", "create", "gamma")  # ids the copy generates follow the copied ones
    assert r.exit_code == 0, r.output


def test_new_rows_on_postgresql_take_ids_after_the_copied_ones(cli, populated, pg_url, monkeypatch):
    assert cli("vault", "copy", "--to", pg_url).exit_code == 0
    monkeypatch.setenv("BYOKCTL_DB", pg_url)
    r = cli("ask", "beta", "again", "--no-stream")  # a usage row, whose id is generated
    assert r.exit_code == 0, r.output
    conn = connect(pg_url)
    try:
        assert [r[0] for r in conn.execute("SELECT id FROM usage ORDER BY id").fetchall()] == [1, 2]
    finally:
        conn.close()


def test_a_target_in_use_is_refused_and_left_alone(cli, populated, pg_url, tmp_path):
    with connect(pg_url) as conn:
        conn.execute("CREATE TABLE invoices (id int)")
    r = cli("vault", "copy", "--to", pg_url)
    assert r.exit_code == 12 and "is not empty" in r.stderr
    other = tmp_path / "other" / "vault.db"
    assert cli("vault", "copy", "--to", str(other)).exit_code == 0
    r = cli("vault", "copy", "--to", str(other))
    assert r.exit_code == 12 and "already holds a vault" in r.stderr
    r = cli("vault", "copy", "--to", str(populated))
    assert r.exit_code == 2 and "overwrite the vault itself" in r.stderr
    notes = tmp_path / "notes" / "notes.txt"
    notes.parent.mkdir(mode=0o700)
    notes.write_text("not a vault")
    notes.chmod(0o600)
    r = cli("vault", "copy", "--to", str(notes))
    assert r.exit_code == 12 and "exists and is not a vault" in r.stderr
    assert notes.read_text() == "not a vault"


def test_an_interrupted_copy_leaves_a_blank_target_and_a_rerun_finishes(cli, populated, pg_url):
    from byokctl.store import transfer

    real_load = transfer.Transfer.load

    def load(self, table, columns, rows):  # the process dies inside the copy of the keys
        if table == "keys":
            raise KeyboardInterrupt
        return real_load(self, table, columns, rows)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(transfer.Transfer, "load", load)
        assert cli("vault", "copy", "--to", pg_url).exit_code == 130  # Ctrl-C
    with connect(pg_url) as conn:  # the schema, and not one row
        assert conn.execute("SELECT count(*) FROM meta").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM orgs").fetchone()[0] == 0
    r = cli("vault", "copy", "--to", pg_url)
    assert r.exit_code == 0, r.output
    assert sealed(pg_url) == sealed(populated)


def test_a_damaged_vault_is_not_copied(cli, populated, pg_url):
    conn = sqlite3.connect(populated)
    conn.execute("UPDATE orgs SET credits = 1000000 WHERE slug = 'acme'")
    conn.commit()
    conn.close()
    r = cli("vault", "copy", "--to", pg_url)
    assert r.exit_code == 13 and "which a copy would carry" in r.stderr
    with connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0


def test_a_password_on_the_command_line_is_refused_unrepeated(cli, populated):
    r = cli("vault", "copy", "--to", "postgresql://ops:hunter2-secret@db.invalid/byokctl")
    assert r.exit_code == 2 and "hunter2-secret" not in r.output and "$PGPASSWORD" in r.stderr
    r = cli("--db", "postgresql://ops:hunter2-secret@db.invalid/byokctl", "org", "list")
    assert r.exit_code == 2 and "hunter2-secret" not in r.output
