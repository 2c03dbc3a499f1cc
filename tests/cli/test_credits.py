"""`credits add|show`: positive whole amounts only, atomic balance updates, audit."""

import json
from pathlib import Path

import pytest
from conftest import audit_rows, in_threads

from byokctl.services import audit, credits
from byokctl.services.context import open_context


@pytest.fixture
def acme_with_credits(cli, vault) -> Path:
    """Org `acme` on the default plan with 10 credits; the vault's path."""
    assert cli("org", "create", "acme", "--credits", "10").exit_code == 0
    return vault


def test_add_updates_balance_and_audits_before_after(cli, acme_with_credits):
    r = cli("credits", "add", "acme", "500", "--reason", "monthly top-up", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"org": "acme", "added": 500, "before": 10, "balance": 510,
                                    "reason": "monthly top-up", "paid_shortfall": 0, "shortfall": 0}
    [entry] = audit_rows(acme_with_credits, "credits.add")
    assert entry["org"] == "acme" and entry["actor"] == "tester"
    assert json.loads(entry["before"]) == {"balance": 10}
    assert json.loads(entry["after"]) == {"balance": 510, "added": 500, "reason": "monthly top-up"}


def test_add_human_output(cli, acme_with_credits):
    r = cli("credits", "add", "acme", "+5")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "Added 5 credits to org acme: 10 → 15."


def test_show_json_and_human(cli, acme_with_credits):
    cli("credits", "add", "acme", "32")
    r = cli("credits", "show", "acme", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"org": "acme", "balance": 42, "shortfall": 0}
    r = cli("credits", "show", "acme")
    assert r.stdout.strip() == "Org acme: 42 credits."


def test_show_needs_no_master_key(cli, acme_with_credits, isolated):
    isolated.entries.clear()  # the keyring forgot the master key: the vault is locked
    r = cli("credits", "show", "acme", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["balance"] == 10
    r = cli("credits", "add", "acme", "1")
    assert r.exit_code == 10, r.output


@pytest.mark.parametrize("amount", ["-5", "0", "abc", "1.5", "1e3", "", "99999999999999999"])
def test_add_refuses_anything_but_a_positive_whole_number(cli, acme_with_credits, amount):
    r = cli("credits", "add", "acme", amount)
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error: ")
    assert "No such option" not in r.stderr and "Traceback" not in r.output
    assert len(r.stderr.strip().splitlines()) == 1
    assert audit_rows(acme_with_credits, "credits.add") == []
    assert json.loads(cli("credits", "show", "acme", "--json").stdout)["balance"] == 10


def test_negative_amount_has_a_clean_message(cli, acme_with_credits):
    r = cli("credits", "add", "acme", "-5")
    assert r.stderr.strip() == ("error: The credit amount must be a positive whole number "
                                "(e.g. 500), not '-5'")


def test_unknown_org(cli, vault):
    r = cli("credits", "add", "nope", "5")
    assert r.exit_code == 3, r.output
    assert "No org 'nope'" in r.stderr


def test_concurrent_adds_never_lose_a_credit(acme_with_credits):
    """Four writers on their own connections: every grant lands, and the audit chain holds."""
    def worker() -> None:
        ctx = open_context(acme_with_credits)
        try:
            for _ in range(10):
                credits.add(ctx, "acme", 3)
        finally:
            ctx.close()

    assert in_threads(4, worker) == []
    ctx = open_context(acme_with_credits)
    try:
        assert credits.show(ctx, "acme").balance == 10 + 4 * 10 * 3
        checked, problems = audit.verify(ctx)
        assert problems == [] and checked >= 40
        # each entry's before/after is exact: the balances form one unbroken sequence
        grants = sorted(audit.log(ctx, action="credits.add"), key=lambda e: e.seq)
        assert [e.before["balance"] for e in grants] == list(range(10, 130, 3))
        assert [e.after["balance"] for e in grants] == list(range(13, 133, 3))
    finally:
        ctx.close()
