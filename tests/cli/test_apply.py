"""`apply FILE` converges the vault to a file, all or nothing and idempotently, auditing each
change as the matching command would; `export` prints the same format back, without secrets."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from conftest import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, connect

from byokctl.providers import catalog

ACME_KEY = "sk-ant-api03-" + "Acme0Key1x" * 4
BOB_KEY = "sk-proj-" + "Bob0OpenAI" * 4

FILE = """
[platform]
provider = "anthropic"
model = "haiku"

[orgs.acme]
name = "Acme Inc"
plan = "growth"
credits = 500
provider = "anthropic"
model = "sonnet"
budget_monthly_usd = 250

[orgs.acme.members]
"alice@acme.com" = "admin"
"Bob@Acme.com" = "staffing"

[[orgs.acme.keys]]
provider = "anthropic"
from_env = "ACME_KEY"

[[orgs.acme.keys]]
provider = "openai"
member = "bob@acme.com"
from_env = "BOB_KEY"

[orgs.beta]
plan = "starter"
credits = 20

[orgs.beta.members]
"carol@beta.io" = "interviewer"
"""


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("ACME_KEY", ACME_KEY)
    monkeypatch.setenv("BOB_KEY", BOB_KEY)
    return monkeypatch


def write(tmp_path: Path, text: str, name: str = "provision.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def stored_bytes(db: Path | str) -> str:
    """A hash of the vault as stored: the file's bytes (on PostgreSQL, the rows of `state`,
    which are all the database holds of it)."""
    if isinstance(db, str):
        return hashlib.sha256(repr(state(db)).encode()).hexdigest()
    return hashlib.sha256(db.read_bytes()).hexdigest()


def state(db: Path) -> list[str]:
    """Every row of every table, as SQL: equal states are equal vaults."""
    conn = connect(db)
    try:
        if isinstance(conn, sqlite3.Connection):
            return list(conn.iterdump())
        from byokctl.store import migrations

        return [repr(row) for t in migrations.TABLES
                for row in conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()]
    finally:
        conn.close()


def audit_rows(db: Path) -> list[tuple]:
    conn = connect(db)
    try:
        return conn.execute("SELECT seq, actor, action, org, target FROM audit ORDER BY seq").fetchall()
    finally:
        conn.close()


def applied(cli, *args: str, code: int = 0, input: str | None = None) -> dict:
    r = cli("apply", *args, "--json", input=input)
    assert r.exit_code == code, r.output
    return json.loads(r.stdout) if code == 0 else json.loads(r.stderr)


# ---- converging -------------------------------------------------------------------------------

def test_fresh_apply_creates_everything_and_audits_each_change(cli, vault, env, tmp_path):
    before = len(audit_rows(vault))
    out = applied(cli, write(tmp_path, FILE))
    assert out["applied"] is True and out["dry_run"] is False
    actions = [(c["action"], c["org"]) for c in out["changes"]]
    assert actions == [
        ("platform.set_default", None),
        ("org.create", "acme"), ("org.set_budget", "acme"), ("org.set_provider", "acme"),
        ("member.add", "acme"), ("member.add", "acme"), ("key.add", "acme"), ("key.add", "acme"),
        ("org.create", "beta"), ("member.add", "beta"),
    ]
    # One audit entry per reported change, same actions, by the operator.
    new = audit_rows(vault)[before:]
    assert [(a, o) for _, _, a, o, _ in new] == actions
    assert {actor for _, actor, _, _, _ in new} == {"tester"}

    acme = json.loads(cli("org", "show", "acme", "--json").stdout)
    assert (acme["name"], acme["plan"], acme["credits"], acme["provider"], acme["model"],
            acme["budget_monthly_usd"]) == ("Acme Inc", "growth", 500, "anthropic",
                                            catalog.load().find("anthropic", "sonnet").id, 250.0)
    people = json.loads(cli("member", "list", "acme", "--json").stdout)
    assert {(m["email"], m["role"]) for m in people} == {("alice@acme.com", "admin"),
                                                         ("bob@acme.com", "staffing")}
    stored = json.loads(cli("key", "list", "acme", "--json").stdout)
    assert {(k["scope"], k["member"], k["provider"], k["hint"]) for k in stored} == {
        ("org", None, "anthropic", "…" + ACME_KEY[-4:]),
        ("member", "bob@acme.com", "openai", "…" + BOB_KEY[-4:])}
    assert {c["target"] for c in out["changes"] if c["action"] == "key.add"} == {
        k["id"] for k in stored}
    beta = json.loads(cli("org", "show", "beta", "--json").stdout)
    assert (beta["name"], beta["plan"], beta["credits"]) == ("beta", "starter", 20)


def test_apply_output_never_holds_a_secret(cli, vault, env, tmp_path):
    path = write(tmp_path, FILE)
    for args in ((path, "--dry-run"), (path,), (path, "--json")):
        r = cli("apply", *args)
        assert r.exit_code == 0, r.output
        for secret in (ACME_KEY, BOB_KEY):
            assert secret not in r.output and secret[-12:] not in r.output
    for entry in json.loads(cli("audit", "log", "--json").stdout):
        assert ACME_KEY not in json.dumps(entry) and BOB_KEY not in json.dumps(entry)


def test_second_apply_changes_nothing_and_says_so(cli, vault, env, tmp_path):
    path = write(tmp_path, FILE)
    assert cli("apply", path).exit_code == 0
    snapshot = state(vault)
    r = cli("apply", path)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("No changes") and r.stderr == ""
    assert state(vault) == snapshot  # not even an audit entry
    out = applied(cli, path)
    assert out == {"changes": [], "applied": False, "dry_run": False, "warnings": []}


def test_dry_run_lists_the_changes_and_writes_nothing(cli, vault, env, tmp_path):
    path = write(tmp_path, FILE)
    snapshot, raw = state(vault), stored_bytes(vault)
    r = cli("apply", path, "--dry-run")
    assert r.exit_code == 0, r.output
    assert "org.create" in r.stdout and "key.add" in r.stdout
    assert "nothing was written" in r.stdout
    assert state(vault) == snapshot
    assert stored_bytes(vault) == raw
    dry = applied(cli, path, "--dry-run")
    assert dry["dry_run"] is True and dry["applied"] is False
    assert state(vault) == snapshot
    # The dry run reports exactly what the real run then does (key ids aside: not drawn yet).
    real = applied(cli, path)
    assert [(c["action"], c["org"], c["detail"]) for c in dry["changes"]] == \
        [(c["action"], c["org"], c["detail"]) for c in real["changes"]]
    assert all(c["target"] is None for c in dry["changes"] if c["action"] == "key.add")


def test_changing_one_field_makes_exactly_that_change(cli, vault, env, tmp_path):
    path = write(tmp_path, FILE)
    assert cli("apply", path).exit_code == 0
    edited = FILE.replace('"alice@acme.com" = "admin"', '"alice@acme.com" = "staffing"')
    out = applied(cli, write(tmp_path, edited))
    assert [(c["action"], c["org"], c["target"]) for c in out["changes"]] == [
        ("member.set_role", "acme", "alice@acme.com")]
    assert out["changes"][0]["detail"] == "role admin → staffing"

    out = applied(cli, write(tmp_path, edited.replace('plan = "starter"', 'plan = "scale"')))
    assert [(c["action"], c["org"], c["detail"]) for c in out["changes"]] == [
        ("plan.set", "beta", "plan starter → scale")]


def test_a_new_secret_rotates_the_key_and_the_same_secret_does_not(cli, vault, env, tmp_path):
    path = write(tmp_path, FILE)
    assert cli("apply", path).exit_code == 0
    key_id = next(k["id"] for k in json.loads(cli("key", "list", "acme", "--json").stdout)
                  if k["scope"] == "org")
    new_secret = "sk-ant-api03-" + "Rotated0Key" * 4
    env.setenv("ACME_KEY", new_secret)
    out = applied(cli, path)
    assert [(c["action"], c["target"]) for c in out["changes"]] == [("key.rotate", key_id)]
    assert out["changes"][0]["detail"] == \
        f"org anthropic key …{ACME_KEY[-4:]} → …{new_secret[-4:]} (version 2)"
    key = next(k for k in json.loads(cli("key", "list", "acme", "--json").stdout) if k["id"] == key_id)
    assert key["version"] == 2 and key["hint"] == "…" + new_secret[-4:]
    assert applied(cli, path)["changes"] == []


def test_credits_are_a_starting_balance_never_topped_up(cli, vault, env, tmp_path):
    path = write(tmp_path, FILE)
    assert cli("apply", path).exit_code == 0
    assert applied(cli, write(tmp_path, FILE.replace("credits = 500", "credits = 900")))["changes"] == []
    assert json.loads(cli("credits", "show", "acme", "--json").stdout)["balance"] == 500


# ---- all or nothing ---------------------------------------------------------------------------

THIRD = """
[orgs.gamma]
plan = "growth"
provider = "openai"
model = "{model}"
"""


@pytest.mark.parametrize("change, code, says", [
    (lambda f: f + THIRD.format(model="gpt-9-imaginary"), 3, "Unknown openai model"),
    (lambda f: f + THIRD.format(model="gpt-5").replace('"growth"\nprovider', '"free"\nprovider'),
     5, "BYOK is not included in org gamma's plan (free)"),
    (lambda f: f + THIRD.format(model="gpt-5") + '[[orgs.gamma.keys]]\nprovider = "openai"\n'
     'from_env = "GAMMA_UNSET_KEY"\n', 2, "$GAMMA_UNSET_KEY (orgs.gamma.keys[0])"),
    (lambda f: f.replace('from_env = "BOB_KEY"', 'from_env = "NOT_AN_OPENAI_KEY"'), 7,
     "$NOT_AN_OPENAI_KEY (orgs.acme.keys[1])"),
    (lambda f: f + THIRD.format(model="gpt-5").replace("model =", "modle ="), 2,
     "Unknown field orgs.gamma.modle"),
    (lambda f: f + '[orgs.gamma.members]\n"dave@gamma.dev" = "owner"\n', 2, "Unknown role 'owner'"),
])
def test_an_error_anywhere_writes_nothing_and_exits_with_its_code(cli, vault, env, tmp_path,
                                                                  change, code, says):
    env.setenv("NOT_AN_OPENAI_KEY", "sk-ant-api03-" + "x" * 40)
    snapshot = state(vault)
    r = cli("apply", write(tmp_path, change(FILE)))
    assert r.exit_code == code, r.output
    assert says in r.stderr and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert state(vault) == snapshot


def test_a_failing_org_after_good_ones_rolls_back_the_good_ones(cli, vault, env, tmp_path):
    """The third org fails inside the transaction, after the first two were written."""
    text = FILE + THIRD.format(model="gpt-9-imaginary")
    r = cli("apply", write(tmp_path, text), "--json")
    assert r.exit_code == 3
    assert json.loads(r.stderr)["error"]["code"] == "not-found"
    assert json.loads(cli("org", "list", "--json").stdout) == []
    assert json.loads(cli("key", "list", "--json").stdout) == []
    assert [a for _, _, a, _, _ in audit_rows(vault)] == ["vault.init"]


def test_all_missing_variables_are_named_at_once(cli, vault, monkeypatch, tmp_path):
    r = cli("apply", write(tmp_path, FILE))
    assert r.exit_code == 2
    assert "$ACME_KEY (orgs.acme.keys[0])" in r.stderr and "$BOB_KEY (orgs.acme.keys[1])" in r.stderr


@pytest.mark.parametrize("entry", [
    f'provider = "anthropic"\nsecret = "{ANTHROPIC_TEST_KEY}"',
    'provider = "anthropic"\napi_key = "not-a-key-but-still-refused"',
    f'provider = "anthropic"\nfrom_env = "{ANTHROPIC_TEST_KEY}"',
])
def test_an_inline_secret_is_refused_and_never_echoed(cli, vault, tmp_path, entry):
    snapshot = state(vault)
    text = f'[orgs.acme]\nplan = "growth"\n\n[[orgs.acme.keys]]\n{entry}\n'
    r = cli("apply", write(tmp_path, text))
    assert r.exit_code == 2, r.output
    assert "orgs.acme.keys[0]" in r.stderr
    assert ANTHROPIC_TEST_KEY not in r.output and "not-a-key-but" not in r.output
    assert ANTHROPIC_TEST_KEY[-8:] not in r.output
    assert state(vault) == snapshot


def test_a_secret_pasted_anywhere_is_refused_without_echo(cli, vault, tmp_path):
    r = cli("apply", write(tmp_path, f'[orgs.acme]\nname = "{OPENAI_TEST_KEY}"\n'))
    assert r.exit_code == 2 and "orgs.acme.name" in r.stderr
    assert OPENAI_TEST_KEY not in r.output and OPENAI_TEST_KEY[-8:] not in r.output


def test_a_member_may_not_apply_or_export(cli, vault, env, tmp_path):
    path = write(tmp_path, FILE)
    assert cli("apply", path).exit_code == 0
    snapshot = state(vault)
    for args in (("apply", path), ("apply", path, "--dry-run"), ("export",)):
        r = cli(*args, "--as", "alice@acme.com")
        assert r.exit_code == 4, r.output
        assert "platform operator" in r.stderr and r.stdout == ""
    assert state(vault) == snapshot


def test_a_missing_or_broken_file_is_a_usage_error(cli, vault, tmp_path):
    r = cli("apply", str(tmp_path / "nope.toml"))
    assert r.exit_code == 2 and "Cannot read" in r.stderr
    r = cli("apply", write(tmp_path, "[orgs.acme\nplan = 1"))
    assert r.exit_code == 2 and "not valid TOML" in r.stderr
    r = cli("apply", write(tmp_path, '{"orgs": ', "p.json"))
    assert r.exit_code == 2 and "not valid JSON" in r.stderr


def test_a_locked_vault_changes_nothing(cli, vault, env, tmp_path, isolated):
    snapshot = state(vault)
    isolated.entries.clear()  # the master key is gone
    for args in ((), ("--dry-run",)):
        r = cli("apply", write(tmp_path, FILE), *args)
        assert r.exit_code == 10, r.output
    assert state(vault) == snapshot


def test_a_transaction_inside_another_is_a_savepoint(vault):
    """What lets apply run the services' own transactions inside its one: an inner failure
    undoes only the inner part; the outer owner decides about the rest."""
    from byokctl.store import open_any

    s = open_any(vault)
    try:
        with s.tx():
            s.set_meta("outer", "1")
            with pytest.raises(RuntimeError), s.tx():
                s.set_meta("inner", "1")
                raise RuntimeError
            with s.tx():
                s.set_meta("inner2", "1")
        assert (s.meta("outer"), s.meta("inner"), s.meta("inner2")) == ("1", None, "1")
        with pytest.raises(RuntimeError), s.tx():
            s.set_meta("gone", "1")
            with s.tx():
                s.set_meta("gone2", "1")
            raise RuntimeError
        assert (s.meta("gone"), s.meta("gone2")) == (None, None)
        assert not s.in_transaction
    finally:
        s.close()


# ---- formats and input ------------------------------------------------------------------------

def as_json_doc() -> str:
    import tomllib

    return json.dumps(tomllib.loads(FILE))


def test_json_input_by_extension_and_by_content(cli, vault, env, tmp_path):
    out = applied(cli, write(tmp_path, as_json_doc(), "provision.json"))
    assert len(out["changes"]) == 10
    assert applied(cli, write(tmp_path, as_json_doc(), "provision.txt"))["changes"] == []


def test_apply_reads_stdin(cli, vault, env):
    out = applied(cli, "-", input=FILE)
    assert {c["org"] for c in out["changes"]} == {None, "acme", "beta"}
    r = cli("apply", "-", input=as_json_doc())
    assert r.exit_code == 0 and r.stdout.startswith("No changes: the vault already matches stdin")


# ---- removing things --------------------------------------------------------------------------

def test_nothing_is_removed_without_prune(cli, vault, env, tmp_path):
    assert cli("apply", write(tmp_path, FILE)).exit_code == 0
    bob_key = next(k["id"] for k in json.loads(cli("key", "list", "acme", "--json").stdout)
                   if k["member"] == "bob@acme.com")
    slim = FILE.replace('"Bob@Acme.com" = "staffing"\n', "").split("[[orgs.acme.keys]]")[0]
    slim += '[[orgs.acme.keys]]\nprovider = "anthropic"\nfrom_env = "ACME_KEY"\n'
    path = write(tmp_path, slim)
    assert applied(cli, path)["changes"] == []
    out = applied(cli, path, "--prune")
    assert [(c["action"], c["target"]) for c in out["changes"]] == [
        ("key.remove", bob_key), ("member.remove", "bob@acme.com")]
    assert out["changes"][0]["detail"] == f"bob@acme.com's openai key …{BOB_KEY[-4:]} removed"
    assert {m["email"] for m in json.loads(cli("member", "list", "acme", "--json").stdout)} == {
        "alice@acme.com"}
    assert [k["provider"] for k in json.loads(cli("key", "list", "acme", "--json").stdout)] == [
        "anthropic"]
    # Orgs missing from the file are never deleted, even with --prune.
    assert {o["slug"] for o in json.loads(cli("org", "list", "--json").stdout)} == {"acme", "beta"}
    assert applied(cli, path, "--prune")["changes"] == []


def test_platform_keys_converge_and_prune(cli, vault, env, tmp_path):
    both = ('[platform]\nprovider = "openai"\nmodel = "gpt-5-mini"\n'
            '[[platform.keys]]\nprovider = "anthropic"\nfrom_env = "ACME_KEY"\n'
            '[[platform.keys]]\nprovider = "openai"\nfrom_env = "BOB_KEY"\n')
    out = applied(cli, write(tmp_path, both))
    assert [c["action"] for c in out["changes"]] == ["platform.set_default", "key.add", "key.add"]
    assert out["changes"][1]["detail"] == f"platform anthropic key …{ACME_KEY[-4:]}"
    assert applied(cli, write(tmp_path, both))["changes"] == []
    one = both.split('[[platform.keys]]\nprovider = "anthropic"')[0] + \
        '[[platform.keys]]\nprovider = "openai"\nfrom_env = "BOB_KEY"\n'
    assert applied(cli, write(tmp_path, one))["changes"] == []
    out = applied(cli, write(tmp_path, one), "--prune")
    assert [c["action"] for c in out["changes"]] == ["key.remove"]
    assert [(k["scope"], k["provider"]) for k in json.loads(cli("key", "list", "--json").stdout)] \
        == [("platform", "openai")]


def test_false_removes_an_optional_setting(cli, vault, env, tmp_path):
    text = FILE.replace('model = "sonnet"', 'model = "sonnet"\nbase_url = "https://eu.example.com"')
    assert cli("apply", write(tmp_path, text)).exit_code == 0
    text = FILE.replace("budget_monthly_usd = 250", "budget_monthly_usd = false\nbase_url = false")
    out = applied(cli, write(tmp_path, text))
    assert [c["action"] for c in out["changes"]] == ["org.set_budget", "org.set_provider"]
    acme = json.loads(cli("org", "show", "acme", "--json").stdout)
    assert acme["budget_monthly_usd"] is None and acme["base_url"] is None


def test_grace_until_converges_once_and_false_revokes(cli, vault, tmp_path):
    text = ('[orgs.small]\nplan = "starter"\nprovider = "anthropic"\n'
            'grace = { until = "2030-12-31", reason = "migration" }\n')
    out = applied(cli, write(tmp_path, text))
    assert [c["action"] for c in out["changes"]] == ["org.create", "plan.grant_grace",
                                                     "org.set_provider"]
    assert applied(cli, write(tmp_path, text))["changes"] == []
    shown = json.loads(cli("org", "show", "small", "--json").stdout)
    assert shown["grace_until"].startswith("2030-12-31T23:59:59")
    out = applied(cli, write(tmp_path, text.replace(
        'grace = { until = "2030-12-31", reason = "migration" }', "grace = false")))
    assert [c["action"] for c in out["changes"]] == ["plan.revoke_grace"]


def test_restating_a_byok_setting_in_soft_fallback_is_no_change(cli, vault, tmp_path):
    """A downgraded org keeps its stored BYOK setting; re-applying it is not a new selection."""
    path = write(tmp_path, '[orgs.acme]\nplan = "growth"\nprovider = "anthropic"\n')
    assert cli("apply", path).exit_code == 0
    assert cli("plan", "set", "acme", "starter").exit_code == 0
    assert applied(cli, write(tmp_path, '[orgs.acme]\nprovider = "anthropic"\n'))["changes"] == []
    r = cli("apply", write(tmp_path, '[orgs.acme]\nprovider = "openai"\n'))
    assert r.exit_code == 5, r.output


# ---- export -----------------------------------------------------------------------------------

def test_export_round_trips_onto_a_fresh_vault(cli, vault, env, tmp_path):
    text = FILE.replace("[orgs.beta]", '[orgs.beta]\ngrace = { until = "2030-01-31", reason = "pilot" }')
    assert cli("apply", write(tmp_path, text)).exit_code == 0
    first = cli("export")
    assert first.exit_code == 0, first.output
    assert ACME_KEY not in first.stdout and BOB_KEY not in first.stdout
    assert 'from_env = "BYOKCTL_KEY_ACME_ANTHROPIC"' in first.stdout
    assert 'from_env = "BYOKCTL_KEY_ACME_BOB_ACME_COM_OPENAI"' in first.stdout
    # Applied back onto the same vault: nothing to do (the secrets match).
    env.setenv("BYOKCTL_KEY_ACME_ANTHROPIC", ACME_KEY)
    env.setenv("BYOKCTL_KEY_ACME_BOB_ACME_COM_OPENAI", BOB_KEY)
    assert applied(cli, "-", input=first.stdout)["changes"] == []
    # Onto a fresh vault: the same export comes back.
    other = tmp_path / "other.db"
    assert cli("--db", str(other), "init").exit_code == 0
    r = cli("--db", str(other), "apply", "-", input=first.stdout)
    assert r.exit_code == 0, r.output
    strip_ids = [ln for ln in first.stdout.splitlines() if not ln.startswith("# key_")]
    again = cli("--db", str(other), "export").stdout
    assert [ln for ln in again.splitlines() if not ln.startswith("# key_")] == strip_ids
    assert cli("--db", str(other), "export", "--json").stdout == cli("export", "--json").stdout


def test_export_json_is_the_apply_format_and_needs_no_master_key(cli, vault, env, tmp_path,
                                                                 isolated):
    assert cli("apply", write(tmp_path, FILE)).exit_code == 0
    isolated.entries.clear()  # no master key from here on
    r = cli("export", "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc == json.loads(cli("export", "--json").stdout)
    assert doc["platform"] == {"provider": "anthropic",
                               "model": catalog.load().find("anthropic", "haiku").id}
    assert doc["orgs"]["acme"]["members"] == {"alice@acme.com": "admin", "bob@acme.com": "staffing"}
    assert doc["orgs"]["acme"]["keys"] == [
        {"provider": "anthropic", "from_env": "BYOKCTL_KEY_ACME_ANTHROPIC"},
        {"provider": "openai", "member": "bob@acme.com",
         "from_env": "BYOKCTL_KEY_ACME_BOB_ACME_COM_OPENAI"}]
    assert cli("export", "--json", "--format", "toml").exit_code == 2


def test_export_leaves_out_a_byok_setting_the_plan_no_longer_allows(cli, vault, tmp_path):
    assert cli("apply", write(tmp_path, '[orgs.acme]\nplan = "growth"\nprovider = "openai"\n')).exit_code == 0
    assert cli("plan", "set", "acme", "free").exit_code == 0
    r = cli("export")
    assert "not exported: plan free does not allow BYOK" in r.stdout
    assert 'provider = "openai"' not in r.stdout
    other = tmp_path / "other.db"
    assert cli("--db", str(other), "init").exit_code == 0
    assert cli("--db", str(other), "apply", "-", input=r.stdout).exit_code == 0


def test_export_quotes_any_name_so_toml_reads_it_back():
    import tomllib

    from byokctl.services.export import Export, to_toml

    doc = {"orgs": {"acme": {"name": 'Ünï "quoted" \\ back\ttab\x7f', "plan": "free",
                             "credits": 0, "budget_monthly_usd": 1e-05,
                             "members": {"a+b@x.io": "admin"}, "keys": []}}}
    assert tomllib.loads(to_toml(Export(doc))) == doc


# ---- --test-keys ------------------------------------------------------------------------------

def test_test_keys_probes_where_the_key_will_be_used_and_a_refusal_writes_nothing(
        cli, vault, tmp_path, monkeypatch, emulator):
    text = (f'[orgs.acme]\nplan = "growth"\nprovider = "anthropic"\n'
            f'base_url = "{emulator.anthropic_base_url}"\n'
            '[[orgs.acme.keys]]\nprovider = "anthropic"\nfrom_env = "ACME_KEY"\n')
    path = write(tmp_path, text)
    monkeypatch.setenv("ACME_KEY", "sk-ant-api03-" + "Refused000" * 4)
    snapshot = state(vault)
    r = cli("apply", path, "--test-keys")
    assert r.exit_code == 7, r.output
    assert "orgs.acme.keys[0]" in r.stderr and "nothing was applied" in r.stderr
    assert state(vault) == snapshot
    monkeypatch.setenv("ACME_KEY", ANTHROPIC_TEST_KEY)
    out = applied(cli, path, "--test-keys")
    assert [c["action"] for c in out["changes"]] == ["org.create", "org.set_provider", "key.add"]
    key = json.loads(cli("key", "list", "acme", "--json").stdout)[0]
    assert key["test_result"] == "ok"
    assert sum(1 for q in emulator.requests if q.provider == "anthropic") == 2


def test_endpoint_approvals_round_trip_and_are_the_operators(cli, vault, env, tmp_path):
    """A personal key's approved base URLs (hostile review 6/11) are exported with the key and
    applied back as the operator's approvals; --prune withdraws those the file leaves out."""
    gw = "https://gw.example.com/v1"
    text = FILE.replace('from_env = "BOB_KEY"\n',
                        f'from_env = "BOB_KEY"\napproved_base_urls = ["{gw}/"]\n')
    out = applied(cli, write(tmp_path, text))
    assert f"bob@acme.com's openai key may be sent to {gw}" in [c["detail"]
                                                               for c in out["changes"]]
    assert applied(cli, write(tmp_path, text))["changes"] == []  # idempotent
    [bob] = [k for k in json.loads(cli("key", "list", "acme", "--json").stdout) if k["member"]]
    assert [(a["base_url"], a["approved_as"]) for a in bob["approved_endpoints"]] == [
        (gw, "operator")]
    first = cli("export").stdout
    assert f'approved_base_urls = ["{gw}"]' in first
    other = tmp_path / "other.db"
    assert cli("--db", str(other), "init").exit_code == 0
    env.setenv("BYOKCTL_KEY_ACME_ANTHROPIC", ACME_KEY)
    env.setenv("BYOKCTL_KEY_ACME_BOB_ACME_COM_OPENAI", BOB_KEY)
    assert cli("--db", str(other), "apply", "-", input=first).exit_code == 0
    assert cli("--db", str(other), "export", "--json").stdout == cli("export", "--json").stdout
    # --prune: an approval the file does not list is withdrawn.
    pruned = applied(cli, "--prune", write(tmp_path, text.replace(f'"{gw}/"', "")))
    assert any(c["action"] == "key.revoke_endpoint" for c in pruned["changes"])
    assert "approved_base_urls" not in cli("export").stdout
    r = cli("apply", write(tmp_path, FILE.replace('from_env = "ACME_KEY"\n',
                                                  f'from_env = "ACME_KEY"\napproved_base_urls = ["{gw}"]\n')))
    assert r.exit_code == 2 and "personal keys" in r.stderr
# ---- hostile files (issue 6/11) -------------------------------------------------------------------

@pytest.mark.parametrize(("name", "text", "fragment"), [
    ("deep.json", '{"orgs": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ("deep.toml", "orgs = " + "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("deep-tables.json", '{"orgs": {"acme": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}}", "nested too deeply"),
    ("surrogate.json", '{"orgs": {"acme": {"name": "Acme \\ud800 Inc"}}}', "orgs.acme.name"),
    ("surrogate-key.json", '{"orgs": {"acme": {"members": {"a\\udfff@acme.com": "admin"}}}}',
     "not valid Unicode"),
    ("surrogate-slug.json", '{"orgs": {"ac\\ud83dme": {}}}', "not valid Unicode"),
    ("dupe.json", '{"orgs": {"acme": {"plan": "growth", "plan": "free"}}}', "'plan' twice"),
    ("dupe-org.json", '{"orgs": {"acme": {"plan": "growth"}, "acme": {"plan": "free"}}}', "'acme' twice"),
    ("dupe-secret.json", '{"orgs": {"acme": {}, "sk-ant-api03-' + "d" * 30 + '": 1, "sk-ant-api03-'
     + "d" * 30 + '": 2}}', "a field twice"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 30 and v.endswith(("json", "toml")) else "")
def test_a_hostile_file_is_a_clean_usage_error(cli, vault, tmp_path, name, text, fragment):
    before = state(vault)
    path = write(tmp_path, text, name)
    for extra in ([], ["--dry-run"], ["--json"]):
        r = cli("apply", path, *extra)
        assert r.exit_code == 2, r.output
        assert fragment in r.stderr, r.stderr
        assert "internal error" not in r.stderr and "Traceback" not in r.output
        assert "sk-ant" not in r.output
        assert len(r.stderr) < 400
    assert state(vault) == before


def test_a_file_from_stdin_is_checked_alike(cli, vault):
    r = cli("apply", "-", input='{"orgs": {"acme": {"plan": "growth", "plan": "free"}}}')
    assert r.exit_code == 2 and "'plan' twice" in r.stderr, r.output
