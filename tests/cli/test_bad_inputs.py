"""Every bad input across the commands: the exact exit code, one clean line on stderr naming
the problem, and nothing written to the vault."""

import shutil
from pathlib import Path

import pytest
from conftest import connect, master_key_b64, run

from byokctl.cli import key as key_cli

TABLES = ("orgs", "members", "keys", "usage", "audit", "meta", "data_keys")

# (id, argv, exit code, a fragment the one-line message must contain)
CASES = [
    # slugs
    ("slug-uppercase", ["org", "create", "Acme"], 2, "not a valid org slug"),
    ("slug-space", ["org", "create", "acme corp"], 2, "not a valid org slug"),
    ("slug-underscore", ["org", "create", "acme_eu"], 2, "not a valid org slug"),
    ("slug-too-long", ["org", "create", "a" * 64], 2, "not a valid org slug"),
    # unknown names from a fixed vocabulary
    ("plan-unknown-create", ["org", "create", "newco", "--plan", "platinum"], 2,
     "Unknown plan 'platinum'"),
    ("plan-unknown-set", ["plan", "set", "acme", "platinum"], 2, "Unknown plan 'platinum'"),
    ("role-unknown-add", ["member", "add", "acme", "bob@acme.com", "--role", "owner"], 2,
     "Unknown role 'owner'"),
    ("role-unknown-set", ["member", "set-role", "acme", "alice@acme.com", "owner"], 2,
     "Unknown role 'owner'"),
    ("provider-unknown-org", ["org", "set-provider", "acme", "mistral", "--yes"], 2,
     "Unknown provider 'mistral'"),
    ("provider-unknown-platform", ["platform", "set-default", "mistral", "--model", "x"], 2,
     "Unknown provider 'mistral'"),
    ("provider-platform-not-byok", ["platform", "set-default", "platform", "--model", "x"], 2,
     "Unknown provider 'platform'"),
    ("provider-unknown-models", ["models", "list", "--provider", "mistral"], 2,
     "Unknown provider 'mistral'"),
    ("model-unknown-org", ["org", "set-provider", "acme", "anthropic", "--model", "gpt-5", "--yes"],
     3, "Unknown anthropic model 'gpt-5'"),
    ("model-unknown-platform", ["platform", "set-default", "openai", "--model", "sonnet"], 3,
     "Unknown openai model 'sonnet'"),
    ("fallback-unknown", ["org", "set-provider", "acme", "anthropic", "--fallback", "sometimes",
                          "--yes"], 2, "Unknown fallback policy 'sometimes'"),
    # credits
    ("credits-negative", ["credits", "add", "acme", "-5"], 2, "positive whole number"),
    ("credits-zero", ["credits", "add", "acme", "0"], 2, "positive whole number"),
    ("credits-word", ["credits", "add", "acme", "ten"], 2, "positive whole number"),
    ("credits-fraction", ["credits", "add", "acme", "2.5"], 2, "positive whole number"),
    ("credits-negative-create", ["org", "create", "newco", "--credits", "-5"], 2,
     "--credits must be zero or more"),
    ("credits-word-create", ["org", "create", "newco", "--credits", "ten"], 2, "--credits"),
    # dates and spans
    ("until-impossible-date", ["plan", "grant-grace", "acme", "--until", "2026-13-40"], 2,
     "'2026-13-40' is not a date"),
    ("until-word", ["plan", "grant-grace", "acme", "--until", "yesterday"], 2,
     "'yesterday' is not a date"),
    ("until-past", ["plan", "grant-grace", "acme", "--until", "2020-01-01"], 2, "in the past"),
    ("days-zero", ["plan", "grant-grace", "acme", "--days", "0"], 2, "--days must be a positive"),
    ("days-negative", ["plan", "grant-grace", "acme", "--days", "-3"], 2,
     "--days must be a positive"),
    ("days-and-until", ["plan", "grant-grace", "acme", "--days", "3", "--until", "2099-01-01"], 2,
     "not both"),
    ("grace-days-zero", ["plan", "set", "acme", "free", "--grace-days", "0"], 2,
     "--grace-days must be a positive"),
    ("grace-days-word", ["plan", "set", "acme", "free", "--grace-days", "x"], 2, "--grace-days"),
    # emails
    ("email-member-add", ["member", "add", "acme", "not-an-email", "--role", "admin"], 2,
     "'not-an-email' is not an email address"),
    ("email-no-domain", ["member", "add", "acme", "bob@", "--role", "admin"], 2,
     "is not an email address"),
    ("email-as", ["member", "add", "acme", "bob@acme.com", "--role", "admin", "--as", "alice"], 2,
     "'alice' is not an email address"),
    # unknown org / member / key
    ("org-unknown-show", ["org", "show", "nope"], 3, "No org 'nope'"),
    ("org-unknown-member-add", ["member", "add", "nope", "bob@acme.com", "--role", "admin"], 3,
     "No org 'nope'"),
    ("org-unknown-plan", ["plan", "set", "nope", "growth"], 3, "No org 'nope'"),
    ("org-unknown-credits", ["credits", "add", "nope", "5"], 3, "No org 'nope'"),
    ("org-unknown-budget", ["org", "set-budget", "nope", "--monthly-usd", "5"], 3, "No org 'nope'"),
    ("member-unknown-remove", ["member", "remove", "acme", "ghost@acme.com"], 3,
     "ghost@acme.com is not a member of org acme"),
    ("member-unknown-set-role", ["member", "set-role", "acme", "ghost@acme.com", "admin"], 3,
     "ghost@acme.com is not a member of org acme"),
    ("key-unknown-remove", ["key", "remove", "key_nope", "--yes"], 3, "key_nope"),
    ("key-unknown-rotate", ["key", "rotate", "key_nope", "--from-env", "NEW_KEY"], 3, "key_nope"),
    ("key-provider-unknown", ["key", "add", "acme", "--provider", "mistral", "--from-env",
                              "NEW_KEY"], 2, "Unknown provider 'mistral'"),
    ("key-org-unknown", ["key", "add", "nope", "--provider", "anthropic", "--from-env",
                         "NEW_KEY"], 3, "No org 'nope'"),
    ("key-member-unknown", ["key", "add", "acme", "--provider", "anthropic", "--member",
                            "ghost@acme.com", "--from-env", "NEW_KEY"], 3,
     "ghost@acme.com is not a member of org acme"),
    # URLs and money
    ("base-url-scheme", ["org", "set-provider", "acme", "openai", "--base-url", "ftp://x.example",
                         "--yes"], 2, "is not an http(s) URL"),
    ("base-url-word", ["platform", "set-default", "openai", "--model", "o3", "--base-url",
                       "localhost"], 2, "is not an http(s) URL"),
    ("budget-negative", ["org", "set-budget", "acme", "--monthly-usd", "-5"], 2,
     "The monthly budget must be a positive amount"),
    ("budget-huge", ["org", "set-budget", "acme", "--monthly-usd", "1e23"], 2,
     "The monthly budget must be below 1,000,000,000,000 (USD a month), not 1e+23"),
    ("budget-zero", ["org", "set-budget", "acme", "--monthly-usd", "0"], 2,
     "The monthly budget must be a positive amount"),
    ("budget-word", ["org", "set-budget", "acme", "--monthly-usd", "lots"], 2, "--monthly-usd"),
    # already exists
    ("member-duplicate", ["member", "add", "acme", "ALICE@acme.com", "--role", "staffing"], 12,
     "already a member"),
    ("org-duplicate", ["org", "create", "acme"], 12, "already exists"),
]

# `key add|rotate|remove` belong to another engineer's module; until a command is registered
# its cases are expected failures (not strict: they start passing when it lands).
KEY_COMMANDS = {c.name for c in key_cli.app.registered_commands}


def _param(case):
    id_, argv, code, fragment = case
    marks = []
    if argv[0] == "key" and argv[1] not in KEY_COMMANDS:
        marks.append(pytest.mark.xfail(strict=False, reason=f"`key {argv[1]}` not landed yet"))
    return pytest.param(argv, code, fragment, id=id_, marks=marks)


@pytest.fixture(scope="module")
def acme_template(tmp_path_factory):
    """acme (growth, BYOK-capable) with one admin; built once, copied for each case."""
    db = tmp_path_factory.mktemp("template") / "vault.db"
    env = {"BYOKCTL_DB": str(db), "BYOKCTL_MASTER_KEY": master_key_b64(), "BYOKCTL_ACTOR": "tester"}
    for args in (["init"], ["org", "create", "acme", "--plan", "growth", "--credits", "10"],
                 ["member", "add", "acme", "alice@acme.com", "--role", "admin"]):
        r = run(*args, env=env)
        assert r.exit_code == 0, r.output
    return db, env["BYOKCTL_MASTER_KEY"]


def snapshot(db: Path) -> dict:
    conn = connect(db)
    state = {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in TABLES}
    conn.close()
    return state


@pytest.mark.parametrize(("argv", "code", "fragment"), [_param(c) for c in CASES])
def test_bad_input_is_refused_cleanly_and_writes_nothing(acme_template, tmp_path, monkeypatch,
                                                         argv, code, fragment):
    db = tmp_path / "vault.db"
    shutil.copy2(acme_template[0], db)
    monkeypatch.setenv("BYOKCTL_DB", str(db))
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", acme_template[1])
    monkeypatch.setenv("NEW_KEY", "sk-ant-api03-" + "x" * 40)
    before = snapshot(db)
    audit_before = before["audit"]

    r = run(*argv)

    assert r.exit_code == code, r.output
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in r.output
    assert fragment in lines[0]
    after = snapshot(db)
    assert after["audit"] == audit_before  # no audit entry: nothing changed
    assert after == before
