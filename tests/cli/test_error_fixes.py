"""Errors that name the right fix (issue 15, item 10): each one seen in use, where the fix
named an option the command lacks, a command where a file field was meant, or a person who
cannot help."""

from __future__ import annotations

import json

import pytest
from conftest import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, audit_rows


def _error(r) -> dict:
    return json.loads(r.stderr)["error"]


def test_rotate_with_another_providers_secret_names_no_option_rotate_lacks(cli, acme):
    r = cli("key", "add", "acme", "--provider", "anthropic", "--from-stdin", "--json",
            input=ANTHROPIC_TEST_KEY)
    key_id = json.loads(r.stdout)["id"]
    r = cli("key", "rotate", key_id, "--from-stdin", "--no-test", "--json", input=OPENAI_TEST_KEY)
    assert r.exit_code == 7
    fix = _error(r)["fix"]
    assert "use --provider" not in fix
    assert f"key {key_id} is for Anthropic" in fix
    assert "`byokctl key add acme --provider openai`" in fix  # the command that has --provider
    assert OPENAI_TEST_KEY not in r.output


def test_key_add_with_another_providers_secret_still_says_use_provider(cli, acme):
    r = cli("key", "add", "acme", "--provider", "anthropic", "--from-stdin", "--json",
            input=OPENAI_TEST_KEY)
    assert r.exit_code == 7 and _error(r)["fix"] == "use --provider openai"


def _apply(cli, tmp_path, text: str, **env: str):
    f = tmp_path / "vault.toml"
    f.write_text(text)
    return cli("apply", str(f), "--json", env=env or None)


@pytest.mark.parametrize("text, field, fix_has", [
    ('[orgs.acme]\nplan = "starter"\nprovider = "anthropic"\n',
     "orgs.acme.provider", 'set orgs.acme.plan to "growth"'),
    ('[orgs.acme]\nplan = "growth"\nprovider = "platform"\nmodel = "haiku"\n',
     "orgs.acme.provider", "leave model and base_url out of orgs.acme"),
    ('[orgs.acme]\nplan = "growth"\nprovider = "anthropic"\nmodel = "nosuch"\n',
     "orgs.acme.model", "choose one of"),
    ('[orgs.acme]\nbudget_monthly_usd = -5\n',
     "orgs.acme.budget_monthly_usd", None),
    ('[orgs.acme]\nplan = "growth"\nprovider = "anthropic"\nbase_url = "http://example.com"\n',
     "orgs.acme.base_url", "set orgs.acme.allow_insecure = true"),
    ('[orgs.acme.members]\n"bob@acme.com" = "boss"\n',
     'orgs.acme.members."bob@acme.com"', "choose one of admin"),
    ('[platform]\nprovider = "anthropic"\nmodel = "gpt-5"\n', "platform.model", "choose one of"),
])
def test_apply_errors_name_the_file_field_not_a_command(cli, vault, tmp_path, text, field, fix_has):
    r = _apply(cli, tmp_path, text)
    assert r.exit_code != 0
    err = _error(r)
    assert err["message"].startswith(f"{field}: "), err
    assert err["details"]["field"] == field
    assert fix_has is None or fix_has in err["fix"], err
    for command in ("plan set", "plan grant-grace", "platform set-default", "--"):
        assert command not in err["message"], err


def test_apply_with_another_providers_key_names_the_keys_provider_field(cli, vault, tmp_path):
    r = _apply(cli, tmp_path, '[orgs.acme]\nplan = "growth"\nprovider = "anthropic"\n'
               '[[orgs.acme.keys]]\nprovider = "anthropic"\nfrom_env = "ACME_KEY"\n',
               ACME_KEY=OPENAI_TEST_KEY)
    assert r.exit_code == 7
    assert _error(r)["fix"] == 'set orgs.acme.keys[0].provider = "openai"'


@pytest.mark.parametrize("args", [["plan", "set", "acme", "starter"],
                                  ["credits", "add", "acme", "5"],
                                  ["platform", "set-default", "openai", "--model", "gpt-5-mini"]])
def test_an_org_admin_denied_an_operators_action_is_not_told_to_ask_an_org_admin(cli, acme, args):
    assert cli("member", "add", "acme", "alice@acme.com", "--role", "admin").exit_code == 0
    r = cli(*args, "--as", "alice@acme.com", "--json")
    assert r.exit_code == 4, r.output
    err = _error(r)
    assert "org admin" not in err["message"]
    assert err["fix"] == "the platform operator runs it, without --as"


def test_a_member_denied_an_org_permission_is_still_pointed_at_an_admin(cli, acme):
    assert cli("member", "add", "acme", "ivy@acme.com", "--role", "interviewer").exit_code == 0
    r = cli("member", "list", "acme", "--as", "ivy@acme.com", "--json")
    assert r.exit_code == 4 and "ask an org admin" in _error(r)["fix"]


def test_key_test_audit_uses_the_same_field_names_before_and_after(cli, acme, emulator):
    cli("org", "set-provider", "acme", "anthropic", "--base-url", emulator.anthropic_base_url, "--yes")
    r = cli("key", "add", "acme", "--provider", "anthropic", "--from-stdin", "--json",
            input=ANTHROPIC_TEST_KEY)
    key_id = json.loads(r.stdout)["id"]
    assert cli("key", "test", key_id).exit_code == 0
    assert cli("key", "test", key_id).exit_code == 0
    first, second = audit_rows(acme, "key.test")
    for entry in (first, second):
        before, after = json.loads(entry["before"]), json.loads(entry["after"])
        assert set(before) <= set(after), (before, after)
    assert json.loads(second["before"])["test_result"] == json.loads(first["after"])["test_result"] == "ok"
