"""Every row of the resolution table (SPEC §3; tests/domain/test_resolve.py's ROWS) through
`byokctl.Vault.resolve`: each row's facts are built in a real vault with the CLI (values no
command accepts, an unknown plan or provider, are written to the store as damage would be),
and the API must decide as the pure chain does."""

from __future__ import annotations

import importlib.util
import json
from datetime import timedelta

import pytest
from conftest import REPO, connect, vault_db

from byokctl import Vault, clock
from byokctl.services import usage as usage_service
from byokctl.services.context import open_context


def _domain_table():  # noqa: ANN202 - the domain test module
    spec = importlib.util.spec_from_file_location("domain_test_resolve",
                                                  REPO / "tests" / "domain" / "test_resolve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TABLE = _domain_table()
ORG_SECRET = "sk-ant-api03-org-" + "o" * 40
MEMBER_SECRET = "sk-ant-api03-member-" + "m" * 40
PLATFORM_SECRET = "sk-proj-platform-" + "p" * 40
GATEWAY = "https://gw.example.com"


def ok(r) -> dict | list | None:  # noqa: ANN001
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout) if r.stdout.strip().startswith(("{", "[")) else None


def build(cli, kw: dict) -> tuple[dict[str, str], dict]:
    """A vault holding the row's facts; (the ids the table names → real key ids, resolve's
    arguments)."""
    facts = TABLE.facts(**kw)
    ids: dict[str, str] = {}
    ok(cli("org", "create", "acme", "--plan", "growth", "--credits", str(facts.credits)))
    if facts.platform_key is not None:
        ids["key_plat"] = ok(cli("key", "add", "--platform", "--provider", "openai",
                                 "--from-stdin", "--json", input=PLATFORM_SECRET))["id"]
    ok(cli("platform", "set-default", "openai", "--model", facts.platform_model))
    byok_args = ["--model", TABLE.SONNET, "--fallback",
                 facts.fallback if facts.fallback in ("never", "missing-key", "provider-error")
                 else "never"]
    if facts.base_url:
        byok_args += ["--base-url", facts.base_url]
    if facts.provider != "platform":
        ok(cli("org", "set-provider", "acme", "anthropic", *byok_args, "--yes"))
    elif facts.fallback != "never":
        ok(cli("org", "set-provider", "acme", "platform", "--fallback", facts.fallback, "--yes"))
    if facts.org_key is not None:
        ids["key_org"] = ok(cli("key", "add", "acme", "--provider", "anthropic", "--from-stdin",
                                "--json", input=ORG_SECRET))["id"]
    if facts.member:
        ok(cli("member", "add", "acme", facts.member, "--role", "interviewer"))
    if facts.member_key is not None:
        ids["key_mem"] = ok(cli("key", "add", "acme", "--provider", "anthropic", "--member",
                                facts.member, "--as", facts.member, "--from-stdin", "--json",
                                input=MEMBER_SECRET))["id"]
        if facts.base_url and facts.member_key_approved:
            ok(cli("key", "approve-endpoint", ids["key_mem"], "--as", facts.member))
    if facts.budget_monthly_usd is not None:
        ok(cli("org", "set-budget", "acme", "--monthly-usd", str(facts.budget_monthly_usd)))
    if facts.byok_cost_mtd:
        ctx = open_context(vault_db())
        with ctx.store.tx():  # what this month's BYOK calls cost, as `ask` records them
            usage_service.insert(ctx.store, usage_service.Record(
                org="acme", actor="tester", mode="byok", outcome="ok", provider="anthropic",
                model=TABLE.SONNET, cost_usd=facts.byok_cost_mtd))
        ctx.close()
    at = None
    plan_known = facts.plan in ("free", "starter", "growth", "scale")
    if facts.grace_until is not None:
        # The table's grace dates are relative to its NOW: a grant ending in 30 days, judged
        # now (FUTURE: active) or 60 days on (PAST: ended).
        if plan_known:
            ok(cli("plan", "set", "acme", facts.plan))
        ok(cli("plan", "grant-grace", "acme", "--days", "30"))
        if facts.grace_until == TABLE.PAST:
            at = clock.now() + timedelta(days=60)
    elif plan_known and facts.plan != "growth":
        ok(cli("plan", "set", "acme", facts.plan))
    damage = {"plan": facts.plan if not plan_known else None,
              "provider": facts.provider if facts.provider not in ("platform", "anthropic") else None,
              "model": facts.model if facts.provider == "anthropic" and facts.model != TABLE.SONNET
              else None,
              "fallback": facts.fallback if facts.fallback not in ("never", "missing-key",
                                                                     "provider-error") else None}
    conn = connect(vault_db())
    for column, value in damage.items():
        if value is not None:  # no command writes it: the store is changed as damage would
            conn.execute(f"UPDATE orgs SET {column} = ? WHERE slug = 'acme'", (value,))
    conn.commit()
    conn.close()
    member = facts.member
    return ids, {"member": member, "at": at}


@pytest.mark.slow  # a vault per row, built with the CLI: about a second each
@pytest.mark.parametrize(("name", "kw", "mode", "key", "reason", "error"), TABLE.ROWS,
                         ids=[r[0] for r in TABLE.ROWS])
def test_every_row_through_the_api(cli, vault, name, kw, mode, key, reason, error):
    ids, args = build(cli, kw)
    with Vault.open(vault_db()) as v:
        d = v.resolve("acme", args["member"], at=args["at"])
    assert d.mode == mode, d.reasons
    assert (d.key.id if d.key else None) == (ids[key] if key else None), d.reasons
    assert d.fallback_reason == reason
    assert (d.error.code if d.error else None) == error, d.error
    assert d.reasons, "every decision says why"
    from byokctl import clock

    r = cli("resolve", "acme", "--json", *(["--as", args["member"]] if args["member"] else []),
            *(["--at", clock.iso(args["at"])] if args["at"] is not None else []))
    printed = json.loads(r.stdout)  # the CLI decides the same, as of the same moment
    at = printed.pop("at")
    assert args["at"] is None or at == clock.iso(args["at"])
    assert printed == d.to_dict()
