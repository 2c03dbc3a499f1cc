"""`member add|list|set-role|remove`: behaviour, JSON, audit, and the last-admin guard."""

import json

import pytest
from conftest import audit_rows, connect

from byokctl.services import integrity
from byokctl.services.context import open_context


def seed_personal_key(db, org, member, provider="anthropic", secret="sk-ant-api03-abcdefXK7q"):
    """Store a member's personal key the way the key service does (sealed, hinted)."""
    ctx = open_context(db)
    try:
        v = ctx.vault()
        key_id = "key_test" + member.split("@")[0]
        dk, nonce, ct = v.seal(secret, key_id=key_id, scope="member", org=org, member=member,
                               provider=provider, version=1)
        with ctx.write() as conn:
            conn.execute(
                "INSERT INTO keys (id, scope, org, member, provider, data_key_id, nonce, "
                "ciphertext, hint, fingerprint, created_at) VALUES (?, 'member', ?, ?, ?, ?, ?, "
                "?, ?, ?, '2026-01-01T00:00:00Z')",
                (key_id, org, member, provider, dk, nonce, ct, "…" + secret[-4:],
                 v.fingerprint(secret)))
            integrity.seal(ctx, "keys", (key_id,))  # as `key add` MACs its row
    finally:
        ctx.close()
    return key_id


def test_add_normalises_email_and_audits(cli, acme):
    r = cli("member", "add", "acme", "  Alice@Acme.COM ", "--role", "admin", "--json")
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["org"] == "acme" and m["email"] == "alice@acme.com" and m["role"] == "admin"
    assert m["keys"] == 0 and m["created_at"]
    [entry] = audit_rows(acme, "member.add")
    assert entry["org"] == "acme" and entry["target"] == "alice@acme.com"
    assert entry["actor"] == "tester"
    assert entry["before"] is None and json.loads(entry["after"]) == {"role": "admin"}


def test_add_human_output(cli, acme):
    r = cli("member", "add", "acme", "bob@acme.com", "--role", "staffing")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "Added bob@acme.com to org acme as staffing."
    assert r.stderr == ""


def test_add_duplicate_conflicts_case_insensitively(cli, acme):
    assert cli("member", "add", "acme", "alice@acme.com", "--role", "admin").exit_code == 0
    r = cli("member", "add", "acme", "ALICE@acme.com", "--role", "staffing")
    assert r.exit_code == 12, r.output
    assert "already a member" in r.stderr and "member set-role" in r.stderr
    assert len(audit_rows(acme, "member.add")) == 1


def test_list_sorted_with_roles_and_key_counts(cli, acme):
    cli("member", "add", "acme", "zed@acme.com", "--role", "interviewer")
    cli("member", "add", "acme", "amy@acme.com", "--role", "admin")
    seed_personal_key(acme, "acme", "zed@acme.com")
    r = cli("member", "list", "acme", "--json")
    assert r.exit_code == 0, r.output
    items = json.loads(r.stdout)
    assert [(m["email"], m["role"], m["keys"]) for m in items] == [
        ("amy@acme.com", "admin", 0), ("zed@acme.com", "interviewer", 1)]
    r = cli("member", "list", "acme")
    assert r.exit_code == 0 and "zed@acme.com" in r.stdout and "interviewer" in r.stdout


def test_list_is_scoped_to_the_org(cli, acme):
    cli("org", "create", "other")
    cli("member", "add", "other", "spy@other.com", "--role", "admin")
    cli("member", "add", "acme", "amy@acme.com", "--role", "admin")
    items = json.loads(cli("member", "list", "acme", "--json").stdout)
    assert [m["email"] for m in items] == ["amy@acme.com"]


def test_set_role_changes_and_audits_before_after(cli, acme):
    cli("member", "add", "acme", "bob@acme.com", "--role", "interviewer")
    r = cli("member", "set-role", "acme", "Bob@acme.com", "staffing", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["changed"] is True and out["before"] == "interviewer" and out["after"] == "staffing"
    [entry] = audit_rows(acme, "member.set_role")
    assert json.loads(entry["before"]) == {"role": "interviewer"}
    assert json.loads(entry["after"]) == {"role": "staffing"}
    items = json.loads(cli("member", "list", "acme", "--json").stdout)
    assert items[0]["role"] == "staffing"


def test_set_role_unchanged_writes_nothing(cli, acme):
    cli("member", "add", "acme", "bob@acme.com", "--role", "staffing")
    r = cli("member", "set-role", "acme", "bob@acme.com", "staffing")
    assert r.exit_code == 0, r.output
    assert "nothing changed" in r.stdout
    assert audit_rows(acme, "member.set_role") == []


def test_set_role_unknown_member_is_not_found(cli, acme):
    r = cli("member", "set-role", "acme", "ghost@acme.com", "admin")
    assert r.exit_code == 3, r.output
    assert "ghost@acme.com is not a member of org acme" in r.stderr


def test_remove_purges_personal_keys_and_says_so(cli, acme):
    cli("member", "add", "acme", "bob@acme.com", "--role", "staffing")
    key_id = seed_personal_key(acme, "acme", "bob@acme.com")
    r = cli("member", "remove", "acme", "bob@acme.com", "--yes")
    assert r.exit_code == 0, r.output
    assert "Removed bob@acme.com (staffing) from org acme" in r.stdout
    assert f"purged 1 personal key ({key_id})" in r.stdout
    conn = connect(acme)
    assert conn.execute("SELECT count(*) FROM keys WHERE id = ?", (key_id,)).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM members WHERE email = 'bob@acme.com'").fetchone()[0] == 0
    [entry] = audit_rows(acme, "member.remove")
    before = json.loads(entry["before"])
    assert before["role"] == "staffing"
    assert [k["id"] for k in before["keys"]] == [key_id]
    assert before["keys"][0]["hint"] == "…XK7q" and before["keys"][0]["fingerprint"].startswith("fp_")
    assert "sk-ant" not in entry["before"]
    assert entry["after"] is None


def test_remove_json_lists_purged_keys(cli, acme):
    cli("member", "add", "acme", "bob@acme.com", "--role", "staffing")
    key_id = seed_personal_key(acme, "acme", "bob@acme.com")
    r = cli("member", "remove", "acme", "bob@acme.com", "--json", "--yes")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["removed"] is True and out["email"] == "bob@acme.com"
    assert [k["id"] for k in out["purged_keys"]] == [key_id]


def test_remove_with_personal_keys_needs_yes_even_off_a_terminal(cli, acme):
    cli("member", "add", "acme", "bob@acme.com", "--role", "staffing")
    key_id = seed_personal_key(acme, "acme", "bob@acme.com")
    before = len(audit_rows(acme))
    for extra in ([], ["--json"]):
        r = cli("member", "remove", "acme", "bob@acme.com", *extra)  # stdin is no terminal here
        assert r.exit_code == 12, r.output
        assert r.stdout == ""
        assert "--yes" in r.stderr
    assert json.loads(r.stderr)["error"]["code"] == "conflict"
    conn = connect(acme)
    assert conn.execute("SELECT count(*) FROM keys WHERE id = ?", (key_id,)).fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM members WHERE email = 'bob@acme.com'").fetchone()[0] == 1
    assert len(audit_rows(acme)) == before
    # A member who may not remove anyone is told that, not asked to confirm.
    cli("member", "add", "acme", "sam@acme.com", "--role", "staffing")
    r = cli("member", "remove", "acme", "bob@acme.com", "--as", "sam@acme.com")
    assert r.exit_code == 4, r.output


def test_a_member_without_personal_keys_is_removed_without_yes(cli, acme):
    cli("member", "add", "acme", "bob@acme.com", "--role", "staffing")
    r = cli("member", "remove", "acme", "bob@acme.com")
    assert r.exit_code == 0, r.output
    assert "no personal keys" in r.stdout


def test_remove_keeps_a_member_whose_key_appeared_after_the_check(cli, acme):
    from byokctl.errors import Conflict
    from byokctl.services import members
    from byokctl.services.context import open_context

    cli("member", "add", "acme", "bob@acme.com", "--role", "staffing")
    ctx = open_context(None)
    try:
        assert members.personal_keys(ctx, "acme", "bob@acme.com") == []  # what was confirmed
        key_id = seed_personal_key(acme, "acme", "bob@acme.com")  # meanwhile, another process
        with pytest.raises(Conflict):
            members.remove(ctx, "acme", "bob@acme.com", purge_keys=False)
    finally:
        ctx.close()
    assert connect(acme).execute("SELECT count(*) FROM keys WHERE id = ?", (key_id,)).fetchone()[0] == 1


def test_remove_unknown_member_is_not_found_and_writes_nothing(cli, acme):
    before = len(audit_rows(acme))
    r = cli("member", "remove", "acme", "ghost@acme.com")
    assert r.exit_code == 3, r.output
    assert len(audit_rows(acme)) == before


def test_sole_admin_acting_as_themselves_cannot_lock_the_org_out(cli, acme):
    cli("member", "add", "acme", "alice@acme.com", "--role", "admin")
    r = cli("member", "set-role", "acme", "alice@acme.com", "staffing", "--as", "alice@acme.com")
    assert r.exit_code == 12, r.output
    assert "without an admin" in r.stderr
    r = cli("member", "remove", "acme", "alice@acme.com", "--as", "alice@acme.com")
    assert r.exit_code == 12, r.output
    roles = {m["email"]: m["role"] for m in json.loads(cli("member", "list", "acme", "--json").stdout)}
    assert roles == {"alice@acme.com": "admin"}


def test_admin_may_step_down_when_another_admin_remains(cli, acme):
    cli("member", "add", "acme", "alice@acme.com", "--role", "admin")
    cli("member", "add", "acme", "carol@acme.com", "--role", "admin")
    r = cli("member", "set-role", "acme", "alice@acme.com", "staffing", "--as", "alice@acme.com")
    assert r.exit_code == 0, r.output
    assert r.stderr == ""
    [entry] = audit_rows(acme, "member.set_role")
    assert entry["actor"] == "alice@acme.com"


def test_operator_may_remove_the_last_admin_with_a_warning(cli, acme):
    cli("member", "add", "acme", "alice@acme.com", "--role", "admin")
    r = cli("member", "remove", "acme", "alice@acme.com")
    assert r.exit_code == 0, r.output
    assert "no admin left" in r.stderr and "member set-role acme EMAIL admin" in r.stderr
    assert json.loads(cli("member", "list", "acme", "--json").stdout) == []
