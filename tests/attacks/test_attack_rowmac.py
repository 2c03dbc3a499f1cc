"""Attack (hostile review 6/11, item 4): rows written to the vault file without the master key.

Someone who can write the file but holds no master key changes a row with sqlite3 (where the
org's key goes, its plan, credits, a member's role, a key's status, the platform default).
Each such row carries a MAC, so `ask` and `key test` refuse it with exit 13 before a key is
sent anywhere (a hostile loopback server, accepting the keys, sees no request at all), no
write re-MACs it into legitimacy, and `vault check --json` names it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import (
    ANTHROPIC_TEST_KEY,
    EMULATOR_KEYS,
    add_key,
    audit_rows,
    connect,
    pg_byok,
    provision_byok,
)

from byokctl.providers.emulator import Config, Emulator
from byokctl.services import audit, integrity
from byokctl.services.context import open_context
from byokctl.vault import macs

INTERVIEWER = "ivan@acme.com"


@pytest.fixture
def attacker_emulator():
    """The attacker's server on 127.0.0.1: it accepts the real keys (so an old byokctl that
    sends one there succeeds) and logs every request that reaches it."""
    emu = Emulator(Config(valid_keys={p: {k} for p, k in EMULATOR_KEYS.items()})).start()
    yield emu
    emu.stop()


@pytest.fixture
def acme_and_plat(cli, vault: Path, emulator) -> dict:
    """acme (growth) on its own Anthropic key at the emulator, `plat` in platform mode on the
    platform's OpenAI key at the emulator, and an interviewer in acme. Every call works."""
    made = provision_byok(cli, emulator)
    for args in (("org", "create", "plat", "--credits", "100"),
                 ("member", "add", "acme", INTERVIEWER, "--role", "interviewer")):
        assert cli(*args).exit_code == 0
    for org in ("acme", "plat"):
        r = cli("ask", org, "hello")
        assert r.exit_code == 0, r.output
    r = cli("vault", "check", "--json")
    assert r.exit_code == 0, r.output
    return {"db": vault, "org_key": made["org_key"], "platform_key": made["platform_key"]}


def tamper(db: Path, sql: str, params: tuple = ()) -> None:
    """What the attacker does: plain sqlite3 on the file, no master key."""
    conn = connect(db)
    try:
        assert conn.execute(sql, params).rowcount >= 1
        conn.commit()
    finally:
        conn.close()


def check_problems(cli) -> list[dict]:
    r = cli("vault", "check", "--json")
    assert r.exit_code == 13, r.output
    return json.loads(r.stdout)["problems"]


def assert_refused(r, attacker_emulator) -> None:
    assert r.exit_code == 13, r.output
    assert "changed outside byokctl" in r.stderr and "Traceback" not in r.output
    assert attacker_emulator.requests == []  # nothing reached it, so no key did
    for secret in EMULATOR_KEYS.values():
        assert secret not in r.output


# ---- the org row: where the key goes, and what money moves --------------------------------------

@pytest.mark.parametrize(("column", "value"), [
    ("base_url", None),  # None: the hostile server's URL
    ("plan", "scale"),
    ("credits", 1_000_000),
    ("provider", "openai"),
    ("model", "claude-opus-4-1-20250805"),
    ("fallback", "provider-error"),
    ("budget_monthly_usd", 1e9),
    ("grace_until", "2099-01-01T00:00:00Z"),
])
def test_a_tampered_org_row_is_refused_at_ask_and_key_test(cli, acme_and_plat, attacker_emulator, column,
                                                            value):
    if column == "base_url":
        value = attacker_emulator.anthropic_base_url
    tamper(acme_and_plat["db"], f"UPDATE orgs SET {column} = ? WHERE slug = 'acme'", (value,))
    assert_refused(cli("ask", "acme", "hello"), attacker_emulator)
    assert_refused(cli("key", "test", acme_and_plat["org_key"]), attacker_emulator)
    assert {"org": "acme", "problem": "org settings changed outside byokctl (MAC mismatch)"} \
        in check_problems(cli)
    # No write re-MACs it: the operator's own change is refused too, and the row stays as found.
    r = cli("org", "set-provider", "acme", "anthropic", "--model", "sonnet", "--yes")
    assert r.exit_code == 13, r.output
    assert {"org": "acme", "problem": "org settings changed outside byokctl (MAC mismatch)"} \
        in check_problems(cli)
    # The other org is untouched and keeps working.
    assert cli("ask", "plat", "hello").exit_code == 0


def test_base_url_pointed_at_the_attacker_never_receives_the_key(cli, acme_and_plat, attacker_emulator):
    """The review's own example, end to end (an old byokctl sent the key and exited 0)."""
    tamper(acme_and_plat["db"], "UPDATE orgs SET base_url = ? WHERE slug = 'acme'",
           (attacker_emulator.anthropic_base_url,))
    r = cli("ask", "acme", "hello", "--json")
    assert_refused(r, attacker_emulator)
    assert json.loads(r.stderr)["error"]["code"] == "integrity"
    # A new key added with --test would be probed at the org's base_url: refused before that.
    r = cli("key", "add", "acme", "--provider", "anthropic", "--member", INTERVIEWER,
            "--from-stdin", "--test", input=ANTHROPIC_TEST_KEY)
    assert_refused(r, attacker_emulator)


@pytest.mark.parametrize("write", [
    ("credits", "add", "acme", "5"),
    ("plan", "set", "acme", "starter"),
    ("plan", "grant-grace", "acme"),
    ("org", "set-budget", "acme", "--monthly-usd", "10"),
    ("org", "set-provider", "acme", "anthropic", "--model", "sonnet", "--yes"),
])
def test_a_write_on_a_tampered_org_row_is_refused_and_changes_nothing(cli, acme_and_plat, write):
    tamper(acme_and_plat["db"], "UPDATE orgs SET credits = 999999 WHERE slug = 'acme'")
    entries = len(audit_rows(acme_and_plat["db"]))
    r = cli(*write)
    assert r.exit_code == 13, r.output
    assert len(audit_rows(acme_and_plat["db"])) == entries
    conn = connect(acme_and_plat["db"])
    assert conn.execute("SELECT credits FROM orgs WHERE slug = 'acme'").fetchone()[0] == 999999
    conn.close()
    assert any(p.get("org") == "acme" for p in check_problems(cli))


def test_an_org_row_copied_from_another_org_is_refused(cli, acme_and_plat, attacker_emulator):
    """A MAC from another row is no MAC: each binds its own slug."""
    tamper(acme_and_plat["db"], "UPDATE orgs SET mac = (SELECT mac FROM orgs WHERE slug = 'plat') "
                       "WHERE slug = 'acme'")
    assert_refused(cli("ask", "acme", "hello"), attacker_emulator)


def test_a_removed_mac_is_tampering(cli, acme_and_plat, attacker_emulator):
    tamper(acme_and_plat["db"], "UPDATE orgs SET mac = NULL, base_url = ? WHERE slug = 'acme'",
           (attacker_emulator.anthropic_base_url,))
    assert_refused(cli("ask", "acme", "hello"), attacker_emulator)
    assert {"org": "acme", "problem": "org settings no MAC: the row was written outside byokctl"} \
        in check_problems(cli)


# ---- credits: every change re-MACs the row in its transaction ----------------------------------

def test_credit_changes_by_ask_and_credits_add_keep_the_row_authentic(cli, acme_and_plat):
    for _ in range(2):
        assert cli("ask", "plat", "hello").exit_code == 0
    assert cli("credits", "add", "plat", "7").exit_code == 0
    r = cli("vault", "check", "--json")
    assert r.exit_code == 0, r.output
    balance = json.loads(cli("credits", "show", "plat", "--json").stdout)["balance"]
    assert balance == 100 - 3 + 7  # three platform calls of one credit each


# ---- members: the role decides permissions ------------------------------------------------------

def test_a_role_raised_in_the_file_grants_nothing(cli, acme_and_plat, attacker_emulator):
    tamper(acme_and_plat["db"], "UPDATE members SET role = 'admin' WHERE email = ?", (INTERVIEWER,))
    r = cli("org", "set-provider", "acme", "anthropic", "--base-url", attacker_emulator.anthropic_base_url,
            "--as", INTERVIEWER, "--yes")
    assert r.exit_code == 13, r.output
    assert_refused(cli("ask", "acme", "hello", "--as", INTERVIEWER), attacker_emulator)
    r = cli("member", "add", "acme", "eve@evil.example", "--role", "admin", "--as", INTERVIEWER)
    assert r.exit_code == 13, r.output
    assert {"member": f"acme/{INTERVIEWER}",
            "problem": "member row changed outside byokctl (MAC mismatch)"} in check_problems(cli)
    conn = connect(acme_and_plat["db"])
    assert conn.execute("SELECT base_url FROM orgs WHERE slug = 'acme'").fetchone()[0] != \
        attacker_emulator.anthropic_base_url
    conn.close()


def test_a_member_row_inserted_in_the_file_is_refused(cli, acme_and_plat, attacker_emulator):
    tamper(acme_and_plat["db"], "INSERT INTO members (org, email, role, created_at) VALUES "
                       "('acme', 'eve@evil.example', 'admin', '2026-01-01T00:00:00Z')")
    assert_refused(cli("ask", "acme", "hello", "--as", "eve@evil.example"), attacker_emulator)
    r = cli("org", "set-provider", "acme", "anthropic", "--base-url", attacker_emulator.anthropic_base_url,
            "--as", "eve@evil.example", "--yes")
    assert r.exit_code == 13, r.output
    assert any(p.get("member") == "acme/eve@evil.example" for p in check_problems(cli))


# ---- keys: status, hint, fingerprint... ---------------------------------------------------------

@pytest.mark.parametrize(("column", "value"), [
    ("status", "invalid"),
    ("hint", "…0000"),
    ("fingerprint", "fp_0000000000000000"),
    ("last_tested_at", "2000-01-01T00:00:00Z"),
])
def test_tampered_key_metadata_is_refused(cli, acme_and_plat, attacker_emulator, column, value):
    tamper(acme_and_plat["db"], f"UPDATE keys SET {column} = ? WHERE id = ?",
           (value, acme_and_plat["org_key"]))
    assert_refused(cli("ask", "acme", "hello"), attacker_emulator)
    assert_refused(cli("key", "test", acme_and_plat["org_key"]), attacker_emulator)
    r = cli("key", "rotate", acme_and_plat["org_key"], "--from-stdin", "--no-test",
            input=ANTHROPIC_TEST_KEY)
    assert r.exit_code == 13, r.output  # a rotation would MAC the tampered row again
    [problem] = [p for p in check_problems(cli) if p.get("key_id") == acme_and_plat["org_key"]]
    assert "key metadata changed outside byokctl" in problem["problem"]
    # The way out the error names: remove it and add it again.
    assert cli("key", "remove", acme_and_plat["org_key"], "--yes").exit_code == 0
    add_key(cli, "acme", "--provider", "anthropic", secret=ANTHROPIC_TEST_KEY)
    assert cli("vault", "check").exit_code == 0
    assert cli("ask", "acme", "hello").exit_code == 0


# ---- the platform settings (meta) ---------------------------------------------------------------

@pytest.mark.parametrize(("sql", "params"), [
    ("UPDATE meta SET value = ? WHERE key = 'platform_base_url'", None),
    ("UPDATE meta SET value = 'anthropic' WHERE key = 'platform_provider'", ()),
    ("INSERT INTO meta (key, value) VALUES ('credit_usd', '1000')", ()),
    ("DELETE FROM meta WHERE key = 'platform_mac'", ()),
])
def test_tampered_platform_settings_are_refused(cli, acme_and_plat, attacker_emulator, sql, params):
    tamper(acme_and_plat["db"], sql, (attacker_emulator.openai_base_url,) if params is None else params)
    assert_refused(cli("ask", "plat", "hello"), attacker_emulator)
    assert_refused(cli("key", "test", acme_and_plat["platform_key"]), attacker_emulator)
    r = cli("platform", "set-default", "openai", "--model", "gpt-5-mini")
    assert r.exit_code == 13, r.output
    assert any(p.get("platform") == "settings" for p in check_problems(cli))


# ---- what still works, and what the report says ------------------------------------------------

def test_vault_check_lists_every_tampered_row(cli, acme_and_plat, attacker_emulator):
    tamper(acme_and_plat["db"], "UPDATE orgs SET base_url = ? WHERE slug = 'acme'",
           (attacker_emulator.anthropic_base_url,))
    tamper(acme_and_plat["db"], "UPDATE members SET role = 'admin' WHERE email = ?", (INTERVIEWER,))
    tamper(acme_and_plat["db"], "UPDATE keys SET status = 'active', hint = '…beef' WHERE id = ?",
           (acme_and_plat["platform_key"],))
    tamper(acme_and_plat["db"], "UPDATE meta SET value = 'gpt-5' WHERE key = 'platform_model'")
    r = cli("vault", "check", "--json")
    assert r.exit_code == 13, r.output
    named = [next((k, v) for k, v in p.items() if k != "problem")
             for p in json.loads(r.stdout)["problems"]]
    assert named == [("org", "acme"), ("member", f"acme/{INTERVIEWER}"), ("platform", "settings"),
                     ("key_id", acme_and_plat["platform_key"])]
    r = cli("vault", "check")
    assert r.exit_code == 13
    assert "org acme" in r.stderr and f"member acme/{INTERVIEWER}" in r.stderr


def test_vault_check_names_a_row_whose_text_is_not_utf8(cli, acme_and_plat):
    """Bytes that are not UTF-8 can only come from a write outside byokctl: the row is
    named, every other row is still checked, and the tool does not crash."""
    tamper(acme_and_plat["db"], "UPDATE orgs SET name = CAST(X'41ff42' AS TEXT) WHERE slug = 'acme'")
    r = cli("vault", "check", "--json")
    assert r.exit_code == 13, r.output
    doc = json.loads(r.stdout)
    assert [p for p in doc["problems"] if "org" in p] == [
        {"org": "acme", "problem": "org settings changed outside byokctl (MAC mismatch)"}]
    assert doc["rows_checked"] >= 5 and "Traceback" not in r.output


def test_read_only_commands_still_work_without_the_master_key(cli, acme_and_plat, monkeypatch,
                                                              isolated, attacker_emulator):
    """They never unlock, so they do not verify (README): they show the row as it is."""
    tamper(acme_and_plat["db"], "UPDATE orgs SET base_url = ? WHERE slug = 'acme'",
           (attacker_emulator.anthropic_base_url,))
    isolated.entries.clear()  # no master key anywhere
    for args in (("org", "list"), ("key", "list"), ("resolve", "acme"), ("usage", "show"),
                 ("audit", "log")):
        r = cli(*args)
        assert r.exit_code == 0, (args, r.output)
    assert cli("ask", "acme", "hello").exit_code == 10  # locked: and nothing sent
    assert attacker_emulator.requests == []


# ---- a vault from before row MACs ---------------------------------------------------------------

def _as_before_row_macs(db: Path) -> None:
    """Rewind a vault to what a byokctl without row MACs left: no mac columns, schema 2, a
    vault.init entry without the `row_macs` mark (the chain re-MACed as that byokctl would
    have, which needs the master key: here the test's own; and, as that byokctl kept no copy
    of the audit head beside the master key, none)."""
    import keyring

    from byokctl.vault import master

    ctx = open_context(str(db))
    try:
        key = ctx.vault().audit_key
        keyring.delete_password(master.KEYRING_SERVICE,
                                master.keyring_user(ctx.vault().vault_id) + ".head")
        conn = ctx.store.conn
        with ctx.store.tx():
            first = json.loads(conn.execute("SELECT after FROM audit WHERE seq = 1").fetchone()[0])
            del first["row_macs"]
            first["schema"] = 2
            conn.execute("UPDATE audit SET after = ? WHERE seq = 1", (audit._dump(first),))
            prev = audit.GENESIS
            for row in conn.execute("SELECT seq, ts, actor, action, org, target, before, after "
                                    "FROM audit ORDER BY seq").fetchall():
                mac = macs.chain_mac(key, prev, audit._fields(*row))
                conn.execute("UPDATE audit SET mac = ? WHERE seq = ?", (mac, row[0]))
                prev, last = mac, row[0]
            head = f"{last}:{prev}"
            ctx.store.set_meta("audit_head", head)
            ctx.store.set_meta("audit_head_tag", macs.tag(key, "audit-head|" + head))
            ctx.store.set_meta("platform_mac", None)
    finally:
        ctx.close()
    conn = connect(db)
    for table in ("orgs", "members", "keys"):
        conn.execute(f"ALTER TABLE {table} DROP COLUMN mac")
    conn.execute("DROP TABLE endpoint_approvals")  # schema 2 had none of these
    conn.execute("ALTER TABLE audit DROP COLUMN os_user")
    conn.execute("DROP TABLE reservations")
    conn.execute("ALTER TABLE orgs DROP COLUMN shortfall")
    conn.execute("DELETE FROM schema_migrations WHERE name IN ('m003_endpoint_approvals', "
                 "'m004_row_macs', 'm005_audit_os_user', 'm006_reservations')")
    conn.execute("PRAGMA user_version = 2")
    conn.close()


@pytest.mark.sqlite_only
def test_a_vault_from_before_row_macs_is_macd_by_the_first_command_with_the_key(cli, acme_and_plat,
                                                                                 attacker_emulator):
    _as_before_row_macs(acme_and_plat["db"])
    assert cli("org", "list").exit_code == 0  # migrates; needs no key, MACs nothing
    r = cli("vault", "check", "--json")
    assert r.exit_code == 0, r.output
    [entry] = audit_rows(acme_and_plat["db"], "vault.mac_rows")
    assert json.loads(entry["after"]) == {"adopted": True, "rows": 5}  # 2 orgs, 1 member, 2 keys
    assert cli("ask", "acme", "hello").exit_code == 0
    # From now on a missing MAC is tampering, marker or not.
    tamper(acme_and_plat["db"], "UPDATE orgs SET mac = NULL, base_url = ? WHERE slug = 'acme'",
           (attacker_emulator.anthropic_base_url,))
    tamper(acme_and_plat["db"], "INSERT INTO meta (key, value) VALUES ('row_macs_pending', '1')")
    assert_refused(cli("ask", "acme", "hello"), attacker_emulator)
    assert any(p.get("org") == "acme" for p in check_problems(cli))


def test_a_forged_upgrade_marker_does_not_mac_a_tampered_row(cli, acme_and_plat, attacker_emulator):
    """The attacker nulls the MAC and claims the vault predates row MACs: its own MACed first
    audit entry says otherwise, so nothing is adopted."""
    tamper(acme_and_plat["db"], "UPDATE orgs SET mac = NULL, base_url = ? WHERE slug = 'acme'",
           (attacker_emulator.anthropic_base_url,))
    tamper(acme_and_plat["db"], "INSERT INTO meta (key, value) VALUES ('row_macs_pending', '1')")
    assert_refused(cli("ask", "acme", "hello"), attacker_emulator)
    [entry] = audit_rows(acme_and_plat["db"], "vault.mac_rows")
    assert json.loads(entry["after"])["adopted"] is False
    assert any(p.get("org") == "acme" for p in check_problems(cli))


def test_integrity_is_the_one_org_update_helper(cli, acme_and_plat):
    """Other services change org rows only through `integrity.update_org` (checked, re-MACed)."""
    ctx = open_context(str(acme_and_plat["db"]))
    try:
        with ctx.write():
            before, after = integrity.update_org(ctx, "plat", lambda o: {"credits": o["credits"] + 1})
        assert after["credits"] == before["credits"] + 1
    finally:
        ctx.close()
    assert cli("vault", "check").exit_code == 0


# ---- a server's long-lived Vault ----------------------------------------------------------------

@pytest.mark.parametrize(("org", "sql"), [
    ("acme", "UPDATE orgs SET base_url = ? WHERE slug = 'acme'"),
    ("acme", "UPDATE keys SET hint = 'forged' WHERE scope = 'org' AND org = 'acme'"),
    ("plat", "UPDATE meta SET value = ? WHERE key = 'platform_base_url'"),
])
def test_a_long_lived_vault_refuses_a_row_tampered_after_it_checked_it(acme_and_plat,
                                                                        attacker_emulator, org, sql):
    """A server's `Vault` checks the same org, key and platform rows at every request, and
    remembers the rows it found intact (envelope.Vault.row_intact): a row changed behind its
    back afterwards, MAC left in place, is refused at its next request all the same, and
    nothing reaches the attacker's server."""
    import byokctl

    url = attacker_emulator.anthropic_base_url if org == "acme" else attacker_emulator.openai_base_url
    with byokctl.Vault.open(acme_and_plat["db"]) as v:
        for _ in range(2):  # checked, then found again among the rows it remembers
            assert v.ask(org, "hello", retries=0).input_tokens > 0
        tamper(acme_and_plat["db"], sql, (url,) if "?" in sql else ())
        with pytest.raises(byokctl.Integrity, match="changed outside byokctl"):
            v.ask(org, "hello", retries=0)
    assert attacker_emulator.requests == []


def test_a_long_lived_vault_refuses_a_value_whose_type_was_changed_behind_it(pg_url, monkeypatch,
                                                                             cli, emulator):
    """PostgreSQL: the attacker changes the credits column's type, so the org's 100 credits
    read back as 100.0: equal in Python, but not the value its MAC covers. A long-lived
    `Vault` that found the row intact before must refuse it as a new one does, and must not
    charge the call and MAC the row again (which would hide it from `vault check`)."""
    import byokctl

    master, _ = pg_byok(pg_url, monkeypatch, cli, emulator)
    assert cli("org", "create", "plat", "--credits", "100").exit_code == 0
    with byokctl.Vault.open(pg_url, master_key=master) as v:
        for _ in range(2):
            assert v.ask("plat", "hello", retries=0).input_tokens > 0
        conn = connect(pg_url)
        conn.execute("ALTER TABLE orgs ALTER COLUMN credits TYPE double precision")
        conn.close()
        with pytest.raises(byokctl.Integrity, match="changed outside byokctl"):
            v.ask("plat", "hello", retries=0)
    assert {"org": "plat", "problem": "org settings changed outside byokctl (MAC mismatch)"} \
        in check_problems(cli)
