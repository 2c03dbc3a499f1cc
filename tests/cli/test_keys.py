"""`key add|list|rotate|remove`: sources of the secret, format checks, slots, permissions,
rotation, and listing without a master key."""

from __future__ import annotations

import json
import secrets
import string

import pytest
from conftest import added_key
from conftest import listed_keys as listed

from byokctl.services import audit, keys
from byokctl.services.context import open_context

ALPHABET = string.ascii_letters + string.digits


def rand(n: int = 40) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(n))


def ant() -> str:
    return "sk-ant-api03-" + rand()


def oai() -> str:
    return "sk-proj-" + rand()


MEMBERS = {"admin@acme.com": "admin", "staff@acme.com": "staffing",
           "int@acme.com": "interviewer", "int2@acme.com": "interviewer"}


@pytest.fixture
def acme_with_members(cli, vault) -> str:
    """Org `acme` (growth) with the four MEMBERS; its slug."""
    r = cli("org", "create", "acme", "--plan", "growth")
    assert r.exit_code == 0, r.output
    for email, role in MEMBERS.items():
        r = cli("member", "add", "acme", email, "--role", role)
        assert r.exit_code == 0, r.output
    return "acme"


def add(cli, *args: str, secret: str | None = None) -> dict:
    """`key add ... --from-stdin --json` that must succeed (an Anthropic key unless `secret`);
    returns the key's JSON."""
    return added_key(cli, *args, secret=secret or ant())


def reveal(key_id: str) -> str:
    ctx = open_context(None)
    try:
        return keys.reveal(ctx, key_id)
    finally:
        ctx.close()


def audit_entries(action: str) -> list[audit.Entry]:
    ctx = open_context(None)
    try:
        return audit.log(ctx, action=action)
    finally:
        ctx.close()


# ---- adding -------------------------------------------------------------------------------------

def test_add_from_stdin_shows_hint_and_fingerprint_never_the_secret(cli, acme_with_members):
    secret = ant()
    r = cli("key", "add", "acme", "--provider", "anthropic", "--from-stdin", input=secret + "\n")
    assert r.exit_code == 0, r.output
    assert "Added Anthropic key key_" in r.stdout and "…" + secret[-4:] in r.stdout
    assert r.stderr == ""
    [k] = listed(cli, "acme")
    for field in ("id", "scope", "org", "member", "provider", "hint", "fingerprint", "version",
                  "status", "test_result", "created_at", "rotated_at", "last_used_at",
                  "last_tested_at"):
        assert field in k
    assert k["id"].startswith("key_") and len(k["id"]) == 14
    assert set(k["id"][4:]) <= set("abcdefghijklmnopqrstuvwxyz234567")
    assert (k["scope"], k["org"], k["member"], k["provider"]) == ("org", "acme", None, "anthropic")
    assert k["hint"] == "…" + secret[-4:]
    assert k["fingerprint"].startswith("fp_") and len(k["fingerprint"]) == 19
    assert (k["version"], k["status"], k["rotated_at"]) == (1, "active", None)
    assert reveal(k["id"]) == secret


def test_add_from_env(cli, acme_with_members, monkeypatch):
    secret = oai()
    monkeypatch.setenv("OPENAI_KEY_FOR_ACME", secret)
    r = cli("key", "add", "acme", "--provider", "openai", "--from-env", "OPENAI_KEY_FOR_ACME",
            "--json")
    assert r.exit_code == 0, r.output
    k = json.loads(r.stdout)
    assert k["provider"] == "openai" and k["hint"] == "…" + secret[-4:]
    assert reveal(k["id"]) == secret


def test_from_env_missing_or_empty_is_a_usage_error(cli, acme_with_members, monkeypatch):
    r = cli("key", "add", "acme", "--provider", "anthropic", "--from-env", "NOPE_NOT_SET")
    assert r.exit_code == 2, r.output
    assert "$NOPE_NOT_SET is not set or is empty" in r.stderr
    monkeypatch.setenv("EMPTY_KEY", "  ")
    r = cli("key", "add", "acme", "--provider", "anthropic", "--from-env", "EMPTY_KEY")
    assert r.exit_code == 2 and "$EMPTY_KEY is not set or is empty" in r.stderr
    r = cli("key", "add", "acme", "--provider", "anthropic", "--from-env", "X", "--from-stdin",
            input=ant())
    assert r.exit_code == 2 and "only one of" in r.stderr
    assert listed(cli, "acme") == []


def test_without_a_source_and_no_terminal_is_a_usage_error(cli, acme_with_members):
    r = cli("key", "add", "acme", "--provider", "anthropic", input=ant() + "\n")
    assert r.exit_code == 2, r.output
    assert "stdin is not a terminal" in r.stderr and "--from-stdin" in r.stderr
    r = cli("key", "add", "acme", "--provider", "anthropic", "--from-stdin", input="\n")
    assert r.exit_code == 2 and "Nothing on stdin" in r.stderr
    assert listed(cli, "acme") == []


def test_stdin_secret_is_stripped(cli, acme_with_members):
    secret = ant()
    k = add(cli, "acme", "--provider", "anthropic", secret=f"  {secret}\r\n\n")
    assert reveal(k["id"]) == secret


def test_same_secret_same_fingerprint_across_orgs(cli, acme_with_members):
    assert cli("org", "create", "beta", "--plan", "scale").exit_code == 0
    shared, other = ant(), ant()
    a = add(cli, "acme", "--provider", "anthropic", secret=shared)
    b = add(cli, "beta", "--provider", "anthropic", secret=shared)
    assert a["id"] != b["id"] and a["fingerprint"] == b["fingerprint"]
    d = add(cli, "acme", "--provider", "anthropic", "--member", "int@acme.com", secret=other)
    assert d["fingerprint"] != a["fingerprint"]


def test_one_key_per_slot_and_conflict_names_rotate(cli, acme_with_members):
    org = add(cli, "acme", "--provider", "anthropic")
    add(cli, "acme", "--provider", "openai", secret=oai())
    add(cli, "acme", "--provider", "anthropic", "--member", "int@acme.com")
    add(cli, "acme", "--provider", "anthropic", "--member", "int2@acme.com")
    secret = ant()
    r = cli("key", "add", "acme", "--provider", "anthropic", "--from-stdin", input=secret)
    assert r.exit_code == 12, r.output
    assert f"`byokctl key rotate {org['id']}`" in r.stderr and secret not in r.output
    r = cli("key", "add", "acme", "--provider", "anthropic", "--member", "INT@acme.com",
            "--from-stdin", input=secret)
    assert r.exit_code == 12 and "int@acme.com already has a personal" in r.stderr
    assert len(listed(cli, "acme")) == 4
    assert len(listed(cli, "acme", "--provider", "openai")) == 1


def test_platform_key(cli, acme_with_members):
    k = add(cli, "--platform", "--provider", "anthropic")
    assert (k["scope"], k["org"], k["member"]) == ("platform", None, None)
    add(cli, "acme", "--provider", "anthropic")
    assert [x["scope"] for x in listed(cli)] == ["platform", "org"]
    assert [x["scope"] for x in listed(cli, "acme")] == ["org"]
    r = cli("key", "add", "acme", "--platform", "--provider", "anthropic", "--from-stdin",
            input=ant())
    assert r.exit_code == 2 and "platform key belongs to no org" in r.stderr
    r = cli("key", "add", "--provider", "anthropic", "--from-stdin", input=ant())
    assert r.exit_code == 2 and "Give the ORG" in r.stderr
    r = cli("key", "add", "--platform", "--provider", "anthropic", "--from-stdin", input=ant())
    assert r.exit_code == 12 and "platform already has an Anthropic key" in r.stderr


def test_unknown_org_member_key_and_provider(cli, acme_with_members):
    r = cli("key", "add", "nope", "--provider", "anthropic", "--from-stdin", input=ant())
    assert r.exit_code == 3 and "No org 'nope'" in r.stderr
    r = cli("key", "add", "acme", "--provider", "anthropic", "--member", "ghost@acme.com",
            "--from-stdin", input=ant())
    assert r.exit_code == 3 and "ghost@acme.com is not a member of org acme" in r.stderr
    r = cli("key", "add", "acme", "--provider", "mistral", "--from-stdin", input=ant())
    assert r.exit_code == 2 and "Unknown provider 'mistral'" in r.stderr
    for cmd in (("rotate", "key_nothere12", "--from-stdin"), ("remove", "key_nothere12", "--yes")):
        r = cli("key", *cmd, input=ant())
        assert r.exit_code == 3 and "No key 'key_nothere12'" in r.stderr
    assert cli("key", "list", "nope").exit_code == 3


# ---- formats ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("provider", "secret", "says"), [
    ("anthropic", "sk-proj-" + rand(), "looks like an OpenAI key"),
    ("anthropic", "sk-" + rand(48), "looks like an OpenAI key"),
    ("openai", "sk-ant-api03-" + rand(), "is an Anthropic key"),
    ("anthropic", "AKIA" + rand(36), "not an Anthropic API key"),
    ("openai", "pk_live_" + rand(), "not an OpenAI API key"),
    ("anthropic", "sk-ant-" + rand(5), "too short"),
    ("openai", "sk-" + rand(600), "too long"),
    ("anthropic", "sk-ant-api03-" + rand(20) + " " + rand(20), "spaces or characters"),
    ("openai", "sk-proj-" + rand(20) + "é" + rand(20), "spaces or characters"),
], ids=["sk-proj-as-anthropic", "sk-as-anthropic", "sk-ant-as-openai", "aws-as-anthropic",
        "stripe-as-openai", "too-short", "too-long", "space", "non-ascii"])  # random parts: no ids
def test_format_is_checked_per_provider(cli, acme_with_members, provider, secret, says):
    r = cli("key", "add", "acme", "--provider", provider, "--from-stdin", input=secret)
    assert r.exit_code == 7, r.output
    assert says in r.stderr
    assert secret not in r.output and secret[-12:] not in r.output
    assert listed(cli, "acme") == []


@pytest.mark.parametrize(("provider", "secret"), [
    ("anthropic", "sk-ant-admin01-" + rand()),
    ("openai", "sk-admin-" + rand()),
], ids=["anthropic", "openai"])
def test_admin_keys_refused_unless_allowed(cli, acme_with_members, provider, secret):
    r = cli("key", "add", "acme", "--provider", provider, "--from-stdin", "--json", input=secret)
    assert r.exit_code == 7, r.output
    message = json.loads(r.stderr)["error"]["message"]
    assert "admin key" in message and "inference" in message and "--allow-admin-key" in message
    assert secret not in r.output
    k = add(cli, "acme", "--provider", provider, "--allow-admin-key", secret=secret)
    assert reveal(k["id"]) == secret


def test_unit_check_format_accepts_real_shapes():
    keys.check_format("anthropic", "sk-ant-api03-" + rand(93) + "AA")
    keys.check_format("openai", "sk-proj-" + rand(156))
    keys.check_format("openai", "sk-" + rand(48))
    keys.check_format("openai", "sk-svcacct-" + rand(60))


# ---- rotate -------------------------------------------------------------------------------------

def test_rotate_keeps_id_bumps_version_and_decrypts(cli, acme_with_members):
    old, new = ant(), ant()
    k = add(cli, "acme", "--provider", "anthropic", secret=old)
    r = cli("key", "rotate", k["id"], "--no-test", "--from-stdin", "--json", input=new + "\n")
    assert r.exit_code == 0, r.output
    done = json.loads(r.stdout)
    assert done["id"] == k["id"] and done["version"] == 2 and done["status"] == "active"
    assert done["hint"] == "…" + new[-4:] and done["fingerprint"] != k["fingerprint"]
    assert done["previous"] == {"hint": k["hint"], "fingerprint": k["fingerprint"], "version": 1}
    assert done["rotated_at"] is not None and done["purged"] is True
    assert reveal(k["id"]) == new
    [listed_key] = listed(cli, "acme")
    assert listed_key["version"] == 2 and listed_key["fingerprint"] == done["fingerprint"]
    [entry] = audit_entries("key.rotate")
    assert entry.target == k["id"] and entry.org == "acme"
    assert entry.before["version"] == 1 and entry.after["version"] == 2
    assert entry.before["hint"] == k["hint"] and entry.after["fingerprint"] == done["fingerprint"]

    r = cli("key", "rotate", k["id"], "--no-test", "--from-stdin", input=new)
    assert r.exit_code == 0, r.output
    assert "already had" in r.stderr
    assert reveal(k["id"]) == new and listed(cli, "acme")[0]["version"] == 3


def test_rotate_makes_an_invalid_key_active_again(cli, acme_with_members):
    k = add(cli, "acme", "--provider", "anthropic")
    ctx = open_context(None)
    try:
        keys.mark_used(ctx, k["id"], status=keys.INVALID, why="anthropic answered 401")
    finally:
        ctx.close()
    assert listed(cli, "acme")[0]["status"] == "invalid"
    r = cli("key", "list", "acme", env={"COLUMNS": "200"})
    assert "invalid" in r.stdout
    assert cli("key", "rotate", k["id"], "--no-test", "--from-stdin", input=ant()).exit_code == 0
    assert listed(cli, "acme")[0]["status"] == "active"


def test_rotate_refuses_a_bad_secret_and_changes_nothing(cli, acme_with_members):
    old = ant()
    k = add(cli, "acme", "--provider", "anthropic", secret=old)
    for bad in ("sk-proj-" + rand(), "sk-ant-admin01-" + rand()):
        r = cli("key", "rotate", k["id"], "--from-stdin", input=bad)
        assert r.exit_code == 7, r.output
        assert bad not in r.output
    assert reveal(k["id"]) == old and listed(cli, "acme")[0]["version"] == 1
    assert audit_entries("key.rotate") == []


def test_rotated_ciphertext_is_bound_to_its_version(cli, acme_with_members):
    """The AD includes the version: the old ciphertext put back under the new version fails."""
    from byokctl.errors import Integrity

    k = add(cli, "acme", "--provider", "anthropic")
    ctx = open_context(None)
    try:
        old = ctx.store.one("SELECT nonce, ciphertext FROM keys WHERE id = ?", (k["id"],))
        old_nonce, old_ct = bytes(old["nonce"]), bytes(old["ciphertext"])
    finally:
        ctx.close()
    assert cli("key", "rotate", k["id"], "--no-test", "--from-stdin", input=ant()).exit_code == 0
    ctx = open_context(None)
    try:
        ctx.store.execute("UPDATE keys SET nonce = ?, ciphertext = ? WHERE id = ?",
                               (old_nonce, old_ct, k["id"]))
        with pytest.raises(Integrity, match=f"key rotate {k['id']}"):
            keys.reveal(ctx, k["id"])
    finally:
        ctx.close()


# ---- remove -------------------------------------------------------------------------------------

def test_remove_needs_confirmation_then_purges(cli, acme_with_members):
    k = add(cli, "acme", "--provider", "anthropic")
    r = cli("key", "remove", k["id"])
    assert r.exit_code == 12 and "--yes" in r.stderr
    assert len(listed(cli, "acme")) == 1
    r = cli("key", "remove", k["id"], "--yes", "--json")
    assert r.exit_code == 0, r.output
    gone = json.loads(r.stdout)
    assert gone["id"] == k["id"] and gone["removed"] is True and gone["purged"] is True
    assert listed(cli, "acme") == []
    [entry] = audit_entries("key.remove")
    assert entry.target == k["id"] and entry.before["fingerprint"] == k["fingerprint"]
    assert cli("key", "rotate", k["id"], "--from-stdin", input=ant()).exit_code == 3
    add(cli, "acme", "--provider", "anthropic")  # the slot is free again


def test_remove_warns_when_the_org_uses_that_provider(cli, acme_with_members):
    k = add(cli, "acme", "--provider", "anthropic")
    assert cli("org", "set-provider", "acme", "anthropic", "--yes").exit_code == 0
    r = cli("key", "remove", k["id"], "--yes")
    assert r.exit_code == 0, r.output
    assert "no-key" in r.stderr and "byokctl key add acme --provider anthropic" in r.stderr


# ---- permissions --------------------------------------------------------------------------------

# (add by ORG, rotate/remove by KEY_ID): someone outside the org is denied the org by name,
# and is not even told that a key id of that org exists.
ORG_KEY_WRITERS = {"admin@acme.com": (0, 0), "staff@acme.com": (4, 4), "int@acme.com": (4, 4),
                   "stranger@else.com": (4, 3)}


@pytest.mark.parametrize(("actor", "codes"), ORG_KEY_WRITERS.items())
def test_org_key_add_rotate_remove_need_org_manage(cli, acme_with_members, actor, codes):
    by_org, by_id = codes
    r = cli("key", "add", "acme", "--provider", "anthropic", "--from-stdin", "--as", actor,
            input=ant())
    assert r.exit_code == by_org, r.output
    if by_org:
        assert "may not manage org acme" in r.stderr or "not a member of org acme" in r.stderr
    k = listed(cli, "acme")[0] if by_org == 0 else add(cli, "acme", "--provider", "anthropic")
    r = cli("key", "rotate", k["id"], "--no-test", "--from-stdin", "--as", actor, input=ant())
    assert r.exit_code == by_id, r.output
    r = cli("key", "remove", k["id"], "--yes", "--as", actor)
    assert r.exit_code == by_id, r.output
    if by_id:
        assert listed(cli, "acme")[0]["version"] == 1


@pytest.mark.parametrize(("actor", "owner", "code"), [
    ("int@acme.com", "int@acme.com", 0),  # key:own
    ("staff@acme.com", "staff@acme.com", 0),
    ("int@acme.com", "int2@acme.com", 4),  # another member's key
    ("staff@acme.com", "int@acme.com", 4),
    ("admin@acme.com", "int@acme.com", 0),  # org:manage
])
def test_personal_keys_own_vs_other(cli, acme_with_members, actor, owner, code):
    r = cli("key", "add", "acme", "--provider", "anthropic", "--member", owner, "--from-stdin",
            "--as", actor, input=ant())
    assert r.exit_code == code, r.output
    if code:
        assert f"{owner}'s personal key" in r.stderr
        k = add(cli, "acme", "--provider", "anthropic", "--member", owner)
    else:
        [k] = listed(cli, "acme")
        assert k["member"] == owner
    r = cli("key", "rotate", k["id"], "--no-test", "--from-stdin", "--as", actor, input=ant())
    assert r.exit_code == code, r.output
    r = cli("key", "remove", k["id"], "--yes", "--as", actor)
    assert r.exit_code == code, r.output


def test_list_visibility_by_role(cli, acme_with_members):
    cli("org", "create", "beta", "--plan", "growth")
    cli("member", "add", "beta", "int@acme.com", "--role", "admin")
    org = add(cli, "acme", "--provider", "anthropic")
    mine = add(cli, "acme", "--provider", "anthropic", "--member", "int@acme.com")
    theirs = add(cli, "acme", "--provider", "openai", "--member", "int2@acme.com", secret=oai())
    beta = add(cli, "beta", "--provider", "openai", secret=oai())
    platform = add(cli, "--platform", "--provider", "openai", secret=oai())

    def ids(*args: str) -> set[str]:
        return {k["id"] for k in listed(cli, *args)}

    acme_ids = {org["id"], mine["id"], theirs["id"]}
    assert ids("acme") == acme_ids
    assert ids() == acme_ids | {beta["id"], platform["id"]}
    assert ids("acme", "--as", "admin@acme.com") == acme_ids
    assert ids("acme", "--as", "staff@acme.com") == acme_ids
    assert ids("acme", "--as", "int@acme.com") == {mine["id"]}
    assert ids("--as", "int@acme.com") == {mine["id"], beta["id"]}  # admin of beta
    assert ids("--as", "staff@acme.com") == acme_ids
    assert ids("acme", "--provider", "openai", "--as", "staff@acme.com") == {theirs["id"]}
    r = cli("key", "list", "acme", "--as", "int@acme.com", env={"COLUMNS": "200"})
    assert r.exit_code == 0 and mine["id"] in r.stdout and "int@acme.com (acme)" in r.stdout
    assert org["id"] not in r.stdout and theirs["id"] not in r.stdout
    r = cli("key", "list", "acme", "--as", "stranger@else.com")
    assert r.exit_code == 4 and "not a member of org acme" in r.stderr


def test_members_cannot_touch_platform_or_other_orgs_keys(cli, acme_with_members):
    cli("org", "create", "beta", "--plan", "growth")
    beta = add(cli, "beta", "--provider", "anthropic")
    platform = add(cli, "--platform", "--provider", "anthropic")
    r = cli("key", "add", "--platform", "--provider", "openai", "--from-stdin",
            "--as", "admin@acme.com", input=oai())
    assert r.exit_code == 4 and "platform operator's alone" in r.stderr
    r = cli("key", "rotate", platform["id"], "--from-stdin", "--as", "admin@acme.com", input=ant())
    assert r.exit_code == 4, r.output
    r = cli("key", "remove", beta["id"], "--yes", "--as", "admin@acme.com")
    assert r.exit_code == 3, r.output  # another tenant's key is not even acknowledged
    assert "beta" not in r.stderr
    assert len(listed(cli)) == 2


# ---- the vault locked ---------------------------------------------------------------------------

def test_listing_needs_no_master_key_but_adding_does(cli, acme_with_members, monkeypatch, isolated):
    from conftest import listed_keys as listed
    from conftest import master_key_b64

    k = add(cli, "acme", "--provider", "anthropic")
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", master_key_b64())  # a wrong key
    assert [x["id"] for x in listed(cli, "acme")] == [k["id"]]
    r = cli("key", "list", env={"COLUMNS": "200"})
    assert r.exit_code == 0 and k["id"] in r.stdout and k["hint"] in r.stdout
    secret = ant()
    r = cli("key", "add", "acme", "--provider", "openai", "--from-stdin", input=secret)
    assert r.exit_code == 10, r.output
    assert "does not open this vault" in r.stderr and "$BYOKCTL_MASTER_KEY" in r.stderr
    r = cli("key", "rotate", k["id"], "--from-stdin", input=secret)
    assert r.exit_code == 10, r.output

    monkeypatch.delenv("BYOKCTL_MASTER_KEY")
    isolated.entries.clear()  # the keyring entry is gone
    assert [x["id"] for x in listed(cli, "acme")] == [k["id"]]
    r = cli("key", "add", "acme", "--provider", "openai", "--from-stdin", input=secret)
    assert r.exit_code == 10, r.output
    assert "No master key for this vault in the OS keyring" in r.stderr
    assert "set $BYOKCTL_MASTER_KEY" in r.stderr and secret not in r.output


# ---- hooks for provider calls -------------------------------------------------------------------

def test_mark_used_and_tested_record_status_and_audit(cli, acme_with_members):
    k = add(cli, "acme", "--provider", "anthropic")
    ctx = open_context(None)
    try:
        keys.mark_used(ctx, k["id"], status=keys.INVALID, why="anthropic answered key-rejected")
        got = keys.get(ctx, k["id"])
        assert got.status == "invalid" and got.last_used_at is not None
        tested = keys.mark_tested(ctx, k["id"], result="ok", status=keys.ACTIVE)
        assert tested.status == "active" and tested.last_tested_at is not None
    finally:
        ctx.close()
    [row] = listed(cli, "acme")
    assert (row["status"], row["test_result"]) == ("active", "ok")
    assert [e.action for e in audit_entries("key")][:2] == ["key.test", "key.status"]


def test_rotate_runs_the_tester_before_writing(cli, acme_with_members):
    from byokctl.errors import KeyRejected

    k = add(cli, "acme", "--provider", "anthropic")
    seen = []

    def refuse(key: keys.Key, secret: str) -> str:
        seen.append(key.id)
        raise KeyRejected("anthropic rejected the key (401)")

    ctx = open_context(None)
    try:
        with pytest.raises(KeyRejected):
            keys.rotate(ctx, k["id"], ant(), tester=refuse)
        assert keys.get(ctx, k["id"]).version == 1 and seen == [k["id"]]
        done = keys.rotate(ctx, k["id"], ant(), tester=lambda key, s: "ok: 9 models")
        assert done.tested and done.key.test_result == "ok: 9 models"
        assert done.key.last_tested_at is not None
    finally:
        ctx.close()


@pytest.mark.parametrize(("scope", "org", "member", "long", "short"), [
    ("org", "acme", None, "org acme", "acme"),
    ("member", "acme", "alice@acme.com", "alice@acme.com in acme", "alice@acme.com (acme)"),
    ("platform", None, None, "platform", "platform"),
])
def test_owner_label_one_place_two_lengths(scope, org, member, long, short):
    """Messages say `org acme`, the `key list` column `acme`: both from one function."""
    from byokctl.services.keys import owner_label

    assert owner_label(scope, org, member) == long
    assert owner_label(scope, org, member, short=True) == short
