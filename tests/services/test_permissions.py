"""Who may do what (SPEC §1): a role × command matrix, `--as` isolation, and audit actors."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import connect, master_key_b64, run

# Copies one template vault per test: a file, or a PostgreSQL database made from a template.

ADMIN, STAFF, INTER = "admin@acme.com", "staff@acme.com", "inter@acme.com"
OUTSIDER = "boss@other.com"  # an admin, but of another org
ACTORS = {"operator": None, "admin": ADMIN, "staffing": STAFF, "interviewer": INTER}

# Which actors the command allows: derived from the permission it needs.
VIEW = {"operator", "admin", "staffing"}  # org:view
MANAGE = {"operator", "admin"}  # org:manage
OPERATOR = {"operator"}  # plans, grace, credits add, budgets, platform settings

COMMANDS = [
    (["org", "show", "acme"], VIEW),
    (["org", "set-provider", "acme", "openai", "--yes"], MANAGE),
    (["org", "set-budget", "acme", "--monthly-usd", "10"], OPERATOR),
    (["org", "delete", "acme", "--yes"], OPERATOR),
    (["member", "add", "acme", "new@acme.com", "--role", "interviewer"], MANAGE),
    (["member", "list", "acme"], VIEW),
    (["member", "set-role", "acme", INTER, "staffing"], MANAGE),
    (["member", "remove", "acme", STAFF], MANAGE),
    (["plan", "set", "acme", "scale"], OPERATOR),
    (["plan", "grant-grace", "acme", "--days", "5"], OPERATOR),
    (["plan", "revoke-grace", "acme"], OPERATOR),
    (["plan", "show", "acme"], VIEW),
    (["credits", "add", "acme", "5"], OPERATOR),
    (["credits", "show", "acme"], VIEW),
    (["platform", "set-default", "openai", "--model", "o3"], OPERATOR),
]


def audit_count(db):
    conn = connect(db)
    n = conn.execute("SELECT count(*) FROM audit").fetchone()[0]
    conn.close()
    return n


def _on_postgres(request) -> bool:
    return request.config.getoption("--engine") == "postgresql"


@pytest.fixture(scope="module")
def two_orgs_template(tmp_path_factory, request):
    """Two orgs and their members, built once; each test gets a copy (setup is the slow part)."""
    on_pg = _on_postgres(request)
    db = request.getfixturevalue("pg_server").database() if on_pg else (
        tmp_path_factory.mktemp("template") / "vault.db")
    env = {"BYOKCTL_DB": str(db), "BYOKCTL_MASTER_KEY": master_key_b64(), "BYOKCTL_ACTOR": "tester"}
    for args in (
        ["init"],
        ["org", "create", "acme", "--plan", "growth", "--credits", "10"],
        ["org", "create", "other", "--plan", "growth"],
        ["member", "add", "acme", ADMIN, "--role", "admin"],
        ["member", "add", "acme", STAFF, "--role", "staffing"],
        ["member", "add", "acme", INTER, "--role", "interviewer"],
        ["member", "add", "other", OUTSIDER, "--role", "admin"],
    ):
        r = run(*args, env=env)
        assert r.exit_code == 0, r.output
    if not on_pg:
        assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0
    return db, env["BYOKCTL_MASTER_KEY"]


@pytest.fixture
def two_orgs_db(two_orgs_template, tmp_path, monkeypatch, request):
    if _on_postgres(request):
        db = request.getfixturevalue("pg_server").database(template=two_orgs_template[0])
    else:
        db = tmp_path / "vault.db"
        shutil.copy2(two_orgs_template[0], db)
    monkeypatch.setenv("BYOKCTL_DB", str(db))
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", two_orgs_template[1])
    return db


@pytest.mark.parametrize("role", list(ACTORS))
@pytest.mark.parametrize(("command", "allowed"),
                         [pytest.param(c, a, id=" ".join(c)) for c, a in COMMANDS])
def test_matrix(cli, two_orgs_db, command, allowed, role):
    email = ACTORS[role]
    before = audit_count(two_orgs_db)
    r = cli(*command, *(["--as", email] if email else []))
    if role in allowed:
        assert r.exit_code == 0, r.output
    else:
        assert r.exit_code == 4, r.output
        assert r.stdout == ""
        assert r.stderr.startswith(f"error: {email}") and "may not" in r.stderr
        assert "platform operator" in r.stderr  # names who may do it
        assert len(r.stderr.strip().splitlines()) == 1
        assert audit_count(two_orgs_db) == before


@pytest.mark.parametrize("command", [
    ["org", "show", "acme"], ["member", "list", "acme"], ["credits", "show", "acme"],
    ["plan", "show", "acme"], ["member", "add", "acme", "x@acme.com", "--role", "admin"],
    ["org", "set-provider", "acme", "openai", "--yes"],
])
@pytest.mark.parametrize("email", ["stranger@nowhere.com", OUTSIDER])
def test_as_someone_who_is_not_a_member_of_the_org_is_denied(cli, two_orgs_db, command, email):
    """Isolation: being an admin of another org gives nothing here."""
    before = audit_count(two_orgs_db)
    r = cli(*command, "--as", email, "--json")
    assert r.exit_code == 4, r.output
    assert r.stdout == ""
    err = json.loads(r.stderr)["error"]
    assert err["code"] == "denied"
    assert err["message"] == (f"{email} is not a member of org acme; add them with "
                              "`byokctl member add`")
    assert audit_count(two_orgs_db) == before


def test_org_list_as_a_member_shows_only_their_orgs(cli, two_orgs_db):
    r = cli("org", "list", "--as", OUTSIDER, "--json")
    assert r.exit_code == 0, r.output
    assert [o["slug"] for o in json.loads(r.stdout)] == ["other"]


def test_unknown_org_is_not_found_before_membership(cli, two_orgs_db):
    r = cli("member", "list", "nope", "--as", ADMIN)
    assert r.exit_code == 3, r.output


@pytest.mark.parametrize(("command", "action"), [
    (["member", "add", "acme", "new@acme.com", "--role", "staffing"], "member.add"),
    (["member", "set-role", "acme", INTER, "staffing"], "member.set_role"),
    (["member", "remove", "acme", STAFF], "member.remove"),
    (["org", "set-provider", "acme", "anthropic", "--yes"], "org.set_provider"),
])
def test_audit_records_the_member_as_actor(cli, two_orgs_db, command, action):
    r = cli(*command, "--as", ADMIN)
    assert r.exit_code == 0, r.output
    conn = connect(two_orgs_db)
    actor, org = conn.execute("SELECT actor, org FROM audit WHERE action = ? ORDER BY seq DESC",
                              (action,)).fetchone()
    conn.close()
    assert (actor, org) == (ADMIN, "acme")


def test_operator_actions_record_the_operator_name(cli, two_orgs_db, monkeypatch):
    monkeypatch.setenv("BYOKCTL_ACTOR", "ops-jane")
    assert cli("credits", "add", "acme", "1").exit_code == 0
    conn = connect(two_orgs_db)
    actor = conn.execute("SELECT actor FROM audit WHERE action = 'credits.add'").fetchone()[0]
    conn.close()
    assert actor == "ops-jane"
