"""Attack (hostile review 6/11, item 10): a reused slug shows the previous tenant.

Org `reuse` is deleted and created again for someone else; its new members must not read the
old tenant's member emails, key fingerprints and credit reasons in `audit log --org reuse`.
Members (and the operator, by default) see the org's current lifetime, from its latest
`org.create`; the operator asks for the earlier ones with `--include-previous`.
"""

from __future__ import annotations

import json

import pytest
from conftest import ANTHROPIC_TEST_KEY

OLD_ADMIN, NEW_ADMIN = "old-admin@previous.example", "new-admin@next.example"
OLD_REASON = "refund for the Q3 incident"


@pytest.fixture
def reused(cli, vault) -> dict:
    """`reuse` with a member, a key and a credit grant; deleted; created again for another
    tenant with its own admin. Returns the old key's fingerprint."""
    for args in (("org", "create", "reuse", "--plan", "growth"),
                 ("member", "add", "reuse", OLD_ADMIN, "--role", "admin"),
                 ("credits", "add", "reuse", "50", "--reason", OLD_REASON)):
        r = cli(*args)
        assert r.exit_code == 0, r.output
    r = cli("key", "add", "reuse", "--provider", "anthropic", "--from-stdin", "--json",
            input=ANTHROPIC_TEST_KEY)
    assert r.exit_code == 0, r.output
    fingerprint = json.loads(r.stdout)["fingerprint"]
    assert cli("org", "delete", "reuse", "--yes").exit_code == 0
    for args in (("org", "create", "reuse"),
                 ("member", "add", "reuse", NEW_ADMIN, "--role", "admin"),
                 ("credits", "add", "reuse", "5")):
        r = cli(*args)
        assert r.exit_code == 0, r.output
    return {"fingerprint": fingerprint}


def log(cli, *args: str) -> tuple[int, str, list[dict]]:
    r = cli("audit", "log", "--org", "reuse", "--json", *args)
    return r.exit_code, r.output, json.loads(r.stdout) if r.exit_code == 0 else []


def leaks(text: str, fingerprint: str) -> list[str]:
    return [s for s in (OLD_ADMIN, fingerprint, OLD_REASON) if s in text]


@pytest.mark.parametrize("extra", [(), ("--action", "member"), ("--action", "credits"),
                                   ("--action", "key"), ("--limit", "100"),
                                   ("--since", "2000-01-01")])
def test_a_new_member_reads_only_the_new_orgs_lifetime(cli, reused, extra):
    code, output, entries = log(cli, "--as", NEW_ADMIN, *extra)
    assert code == 0, output
    assert leaks(output, reused["fingerprint"]) == []
    assert all(e["action"] != "org.delete" for e in entries)
    if not extra:
        assert [e["action"] for e in reversed(entries)] == ["org.create", "member.add",
                                                            "credits.add"]
    # the human table too
    r = cli("audit", "log", "--org", "reuse", "--as", NEW_ADMIN, *extra)
    assert r.exit_code == 0, r.output
    assert leaks(r.output, reused["fingerprint"]) == []


def test_a_member_may_not_ask_for_the_previous_tenant(cli, reused):
    r = cli("audit", "log", "--org", "reuse", "--as", NEW_ADMIN, "--include-previous")
    assert r.exit_code == 4, r.output
    assert r.stdout == "" and leaks(r.output, reused["fingerprint"]) == []
    assert "platform operator" in r.stderr


def test_the_operator_sees_the_current_lifetime_by_default_and_the_rest_on_request(cli, reused):
    code, output, current = log(cli)
    assert code == 0, output
    assert leaks(output, reused["fingerprint"]) == []
    assert [e["action"] for e in current][-1] == "org.create"
    code, output, everything = log(cli, "--include-previous")
    assert code == 0, output
    assert set(leaks(output, reused["fingerprint"])) == {OLD_ADMIN, reused["fingerprint"],
                                                         OLD_REASON}
    assert "org.delete" in [e["action"] for e in everything]
    assert everything[:len(current)] == current  # the current lifetime, then the earlier one
    # The whole log, without --org, is the operator's as before.
    r = cli("audit", "log", "--json")
    assert r.exit_code == 0 and OLD_ADMIN in r.stdout


def test_include_previous_needs_an_org(cli, reused):
    r = cli("audit", "log", "--include-previous")
    assert r.exit_code == 2, r.output
    assert "--org" in r.stderr


def test_a_deleted_org_not_created_again_is_the_operators_to_read(cli, vault):
    """Its last lifetime (up to its deletion) stays readable by the operator."""
    for args in (("org", "create", "gone"), ("member", "add", "gone", OLD_ADMIN, "--role", "admin"),
                 ("org", "delete", "gone", "--yes")):
        assert cli(*args).exit_code == 0
    r = cli("audit", "log", "--org", "gone", "--json")
    assert r.exit_code == 0, r.output
    assert [e["action"] for e in json.loads(r.stdout)] == ["org.delete", "member.add", "org.create"]
    r = cli("audit", "log", "--org", "gone", "--as", OLD_ADMIN)
    assert r.exit_code != 0 and OLD_ADMIN not in r.stdout
