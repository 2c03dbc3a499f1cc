"""`plan set|grant-grace|revoke-grace|show`: the BYOK gate, grace dates, soft fallback, audit."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from conftest import audit_rows

from byokctl import clock

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def frozen(monkeypatch):
    """A clock the test can move: `frozen.now = ...`."""
    class Clock:
        now = NOW

    monkeypatch.setattr(clock, "now", lambda: Clock.now)
    return Clock




def show(cli, org="acme"):
    r = cli("plan", "show", org, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.fixture
def byok_org(cli, vault, frozen):
    """A growth org set to Anthropic BYOK."""
    assert cli("org", "create", "acme", "--plan", "growth").exit_code == 0
    r = cli("org", "set-provider", "acme", "anthropic", "--model", "haiku", "--yes")
    assert r.exit_code == 0, r.output
    return vault


def test_set_plan_changes_and_audits(cli, vault):
    cli("org", "create", "acme", "--plan", "free")
    r = cli("plan", "set", "acme", "scale", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["changed"] is True
    assert out["before"]["plan"] == "free" and out["after"]["plan"] == "scale"
    assert out["byok_allowed"] is True
    [entry] = audit_rows(vault, "plan.set")
    assert entry["org"] == "acme" and entry["actor"] == "tester"
    assert json.loads(entry["before"])["plan"] == "free"
    assert json.loads(entry["after"])["plan"] == "scale"
    assert show(cli)["plan"] == "scale"


def test_set_same_plan_writes_nothing(cli, vault):
    cli("org", "create", "acme", "--plan", "growth")
    r = cli("plan", "set", "acme", "growth")
    assert r.exit_code == 0, r.output
    assert "nothing changed" in r.stdout
    assert audit_rows(vault, "plan.set") == []


def test_downgrade_without_grace_falls_back_softly_and_says_so(cli, byok_org):
    r = cli("plan", "set", "acme", "starter")
    assert r.exit_code == 0, r.output
    assert "fall back to platform credits" in r.stderr
    assert "byokctl plan grant-grace acme" in r.stderr
    assert "starter" in r.stdout
    shown = json.loads(cli("org", "show", "acme", "--json").stdout)
    assert shown["provider"] == "anthropic"  # the setting is kept
    assert shown["model"] == "claude-haiku-5-5"
    assert shown["effective_mode"] == "platform" and shown["fallback_reason"] == "gate-lapsed"
    g = show(cli)
    assert g["byok_allowed"] is False and g["soft_fallback"] is True


def test_downgrade_warning_goes_to_stderr_with_json_too(cli, byok_org):
    r = cli("plan", "set", "acme", "free", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["soft_fallback"] is True
    assert "warning:" in r.stderr


def test_downgrade_of_a_platform_org_needs_no_warning(cli, vault):
    cli("org", "create", "acme", "--plan", "growth")
    r = cli("plan", "set", "acme", "free")
    assert r.exit_code == 0, r.output
    assert r.stderr == ""


def test_downgrade_with_grace_days_keeps_byok(cli, byok_org, frozen):
    r = cli("plan", "set", "acme", "starter", "--grace-days", "10", "--json")
    assert r.exit_code == 0, r.output
    assert r.stderr == ""
    out = json.loads(r.stdout)
    assert out["after"]["grace_until"] == clock.iso(NOW + timedelta(days=10))
    assert out["grace_active"] is True and out["byok_allowed"] is True
    shown = json.loads(cli("org", "show", "acme", "--json").stdout)
    assert shown["fallback_reason"] is None and shown["grace_active"] is True
    [entry] = audit_rows(byok_org, "plan.set")
    assert json.loads(entry["after"])["grace_until"] == clock.iso(NOW + timedelta(days=10))


def test_upgrade_restores_byok(cli, byok_org):
    cli("plan", "set", "acme", "free")
    assert show(cli)["soft_fallback"] is True
    r = cli("plan", "set", "acme", "scale")
    assert r.exit_code == 0, r.output
    assert r.stderr == ""
    g = show(cli)
    assert g["provider"] == "anthropic" and g["byok_allowed"] is True and not g["soft_fallback"]
    shown = json.loads(cli("org", "show", "acme", "--json").stdout)
    assert shown["fallback_reason"] is None


def test_grace_days_on_a_byok_plan_is_a_usage_error(cli, vault):
    cli("org", "create", "acme", "--plan", "starter")
    r = cli("plan", "set", "acme", "growth", "--grace-days", "5")
    assert r.exit_code == 2, r.output
    assert "--grace-days" in r.stderr
    assert show(cli)["plan"] == "starter"


def test_grant_grace_defaults_to_30_days(cli, byok_org, frozen):
    cli("plan", "set", "acme", "starter")
    r = cli("plan", "grant-grace", "acme", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["grace_until"] == clock.iso(NOW + timedelta(days=30))
    g = show(cli)
    assert g["grace_active"] is True and g["byok_allowed"] is True and not g["soft_fallback"]


def test_grant_grace_until_means_through_the_end_of_that_day(cli, byok_org):
    cli("plan", "set", "acme", "starter")
    r = cli("plan", "grant-grace", "acme", "--until", "2026-04-30", "--reason", "renewal talks")
    assert r.exit_code == 0, r.output
    assert "2026-04-30 23:59 UTC" in r.stdout
    g = show(cli)
    assert g["grace_until"] == "2026-04-30T23:59:59.000000Z"
    assert g["grace_reason"] == "renewal talks"
    [entry] = audit_rows(byok_org, "plan.grant_grace")
    assert json.loads(entry["before"])["grace_until"] is None
    assert json.loads(entry["after"]) == {"plan": "starter",
                                          "grace_until": "2026-04-30T23:59:59.000000Z",
                                          "grace_reason": "renewal talks"}


def test_grant_grace_that_ends_earlier_needs_yes_and_says_old_to_new(cli, byok_org):
    cli("plan", "set", "acme", "starter")
    assert cli("plan", "grant-grace", "acme", "--until", "2026-04-30").exit_code == 0
    r = cli("plan", "grant-grace", "acme", "--until", "2026-04-10")  # off a terminal, no --yes
    assert r.exit_code == 12, r.output
    assert "2026-04-30T23:59:59.000000Z → 2026-04-10T23:59:59.000000Z" in r.stderr
    assert "--yes" in r.stderr and r.stdout == ""
    assert show(cli)["grace_until"] == "2026-04-30T23:59:59.000000Z"
    assert len(audit_rows(byok_org, "plan.grant_grace")) == 1
    r = cli("plan", "grant-grace", "acme", "--until", "2026-04-10", "--yes")
    assert r.exit_code == 0, r.output
    assert "grace end 2026-04-30 23:59 → 2026-04-10 23:59 UTC, earlier than before" in r.stdout
    assert show(cli)["grace_until"] == "2026-04-10T23:59:59.000000Z"
    r = cli("plan", "grant-grace", "acme", "--days", "1", "--yes", "--json")
    out = json.loads(r.stdout)
    assert out["previous_grace_until"] == "2026-04-10T23:59:59.000000Z"
    assert out["grace_until"] == clock.iso(NOW + timedelta(days=1)) and out["grace_shortened"] is True
    assert len(audit_rows(byok_org, "plan.grant_grace")) == 3


def test_grant_grace_that_ends_later_needs_no_yes_and_says_old_to_new(cli, byok_org):
    cli("plan", "set", "acme", "starter")
    assert cli("plan", "grant-grace", "acme", "--until", "2026-04-10").exit_code == 0
    r = cli("plan", "grant-grace", "acme", "--until", "2026-04-30")
    assert r.exit_code == 0, r.output
    assert "grace end 2026-04-10 23:59 → 2026-04-30 23:59 UTC)" in r.stdout
    out = json.loads(cli("plan", "grant-grace", "acme", "--until", "2026-05-31", "--json").stdout)
    assert out["previous_grace_until"] == "2026-04-30T23:59:59.000000Z"
    assert out["grace_shortened"] is False


def test_plan_set_grace_days_that_shortens_a_grant_needs_yes(cli, byok_org):
    cli("plan", "set", "acme", "starter")
    assert cli("plan", "grant-grace", "acme", "--days", "60").exit_code == 0
    r = cli("plan", "set", "acme", "free", "--grace-days", "10")
    assert r.exit_code == 12 and "→" in r.stderr and "--yes" in r.stderr, r.output
    assert show(cli)["plan"] == "starter"
    assert show(cli)["grace_until"] == clock.iso(NOW + timedelta(days=60))
    r = cli("plan", "set", "acme", "free", "--grace-days", "10", "--yes")
    assert r.exit_code == 0, r.output
    assert f"grace end {clock.iso(NOW + timedelta(days=60))[:16].replace('T', ' ')} → " in r.stdout
    g = show(cli)
    assert g["plan"] == "free" and g["grace_until"] == clock.iso(NOW + timedelta(days=10))
    assert cli("plan", "set", "acme", "starter", "--grace-days", "20").exit_code == 0  # longer


def test_a_new_grant_after_a_lapsed_one_needs_no_yes(cli, byok_org, frozen):
    cli("plan", "set", "acme", "starter")
    assert cli("plan", "grant-grace", "acme", "--until", "2026-03-05").exit_code == 0
    frozen.now = datetime(2026, 3, 10, tzinfo=UTC)
    r = cli("plan", "grant-grace", "acme", "--days", "3", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["grace_shortened"] is False


def test_grace_on_the_last_day_and_after_it(cli, byok_org, frozen):
    cli("plan", "set", "acme", "starter")
    cli("plan", "grant-grace", "acme", "--until", "2026-03-05")
    frozen.now = datetime(2026, 3, 5, 23, 0, tzinfo=UTC)
    assert show(cli)["grace_active"] is True
    frozen.now = datetime(2026, 3, 6, 0, 0, 1, tzinfo=UTC)
    g = show(cli)
    assert g["grace_active"] is False and g["soft_fallback"] is True
    shown = json.loads(cli("org", "show", "acme", "--json").stdout)
    assert shown["fallback_reason"] == "gate-lapsed"


def test_grace_shows_a_banner_in_org_show(cli, byok_org):
    cli("plan", "set", "acme", "starter")
    cli("plan", "grant-grace", "acme", "--until", "2026-04-30")
    r = cli("org", "show", "acme")
    assert r.exit_code == 0, r.output
    assert "grace grant active until 2026-04-30 23:59" in r.stdout


def test_grant_grace_on_a_byok_plan_is_allowed_and_explained(cli, vault):
    cli("org", "create", "acme", "--plan", "growth")
    r = cli("plan", "grant-grace", "acme", "--days", "7")
    assert r.exit_code == 0, r.output
    assert "includes BYOK anyway" in r.stdout


def test_revoke_grace_clears_and_warns_when_byok_lapses(cli, byok_org):
    cli("plan", "set", "acme", "starter", "--grace-days", "30")
    r = cli("plan", "revoke-grace", "acme", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["changed"] is True and out["grace_until"] is None
    assert "fall back to platform credits" in r.stderr
    [entry] = audit_rows(byok_org, "plan.revoke_grace")
    assert json.loads(entry["before"])["grace_until"] is not None
    assert json.loads(entry["after"])["grace_until"] is None
    assert show(cli)["soft_fallback"] is True


def test_revoke_without_grace_changes_nothing(cli, vault):
    cli("org", "create", "acme")
    r = cli("plan", "revoke-grace", "acme")
    assert r.exit_code == 0, r.output
    assert "no grace grant" in r.stdout
    assert audit_rows(vault, "plan.revoke_grace") == []


@pytest.mark.parametrize("args", [
    ["--days", "0"], ["--days", "-3"], ["--days", "5", "--until", "2099-01-01"],
    ["--until", "2026-02-28"], ["--days", "100000"],
])
def test_grant_grace_rejects_bad_spans(cli, vault, frozen, args):
    cli("org", "create", "acme")
    r = cli("plan", "grant-grace", "acme", *args)
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error: ") and "Traceback" not in r.output
    assert audit_rows(vault, "plan.grant_grace") == []


def test_plan_show_fields_and_human_output(cli, vault):
    cli("org", "create", "acme", "--plan", "starter")
    g = show(cli)
    assert g == {"org": "acme", "plan": "starter", "provider": "platform",
                 "byok_allowed_by_plan": False, "grace_until": None, "grace_reason": None,
                 "grace_active": False, "byok_allowed": False, "soft_fallback": False,
                 "gate": {"plan": "starter", "allowed": False, "grace_until": None}}
    r = cli("plan", "show", "acme")
    assert r.exit_code == 0, r.output
    assert "BYOK not allowed (plan starter excludes it" in r.stdout


@pytest.mark.parametrize("command", [
    ["plan", "set", "acme", "scale"], ["plan", "grant-grace", "acme"],
    ["plan", "revoke-grace", "acme"],
])
def test_plan_changes_are_the_operators_alone(cli, vault, command):
    cli("org", "create", "acme")
    cli("member", "add", "acme", "boss@acme.com", "--role", "admin")
    r = cli(*command, "--as", "boss@acme.com")
    assert r.exit_code == 4, r.output
    assert "platform operator" in r.stderr
    assert show(cli)["plan"] == "free"


def store_plan(db, org: str, plan: str, grace_until: str | None = None) -> None:
    """Write a plan byokctl does not know, as a newer byokctl would (the row MAC-sealed)."""
    from byokctl.services import integrity
    from byokctl.services.context import open_context

    ctx = open_context(db)
    try:
        with ctx.write() as conn:
            conn.execute("UPDATE orgs SET plan = ?, grace_until = ? WHERE slug = ?",
                         (plan, grace_until, org))
            integrity.seal(ctx, "orgs", (org,))
    finally:
        ctx.close()


def test_an_unknown_plan_in_the_store_fails_closed_with_exit_5_everywhere(cli, byok_org):
    """SPEC §3.7: one gate, so one answer: never BYOK, and the same PlanGate (exit 5) from
    every command that would act on it, grace grant or not."""
    store_plan(byok_org, "acme", "enterprise", "2099-01-01T00:00:00.000000Z")
    message = "Org acme has unknown plan 'enterprise'; set a known plan with `byokctl plan set acme PLAN`"
    r = cli("org", "set-provider", "acme", "openai", "--yes")
    assert r.exit_code == 5, r.output
    assert message in r.stderr
    r = cli("resolve", "acme", "--json")
    assert r.exit_code == 5, r.output
    d = json.loads(r.stdout)
    assert d["mode"] is None and d["gate"]["allowed"] is False
    assert d["error"] == {"code": "plan-gate", "message": message}
    r = cli("ask", "acme", "hello")
    assert r.exit_code == 5, r.output
    # The views say the gate is closed, and no grace banner claims BYOK holds.
    g = show(cli)
    assert g["byok_allowed"] is False and g["byok_allowed_by_plan"] is False
    assert g["soft_fallback"] is True and g["gate"]["allowed"] is False
    r = cli("org", "show", "acme")
    assert r.exit_code == 0, r.output
    assert "grace grant active" not in r.output
    # A known plan opens the gate again (this org has no key yet: the no-key error, exit 6).
    assert cli("plan", "set", "acme", "growth").exit_code == 0
    r = cli("resolve", "acme", "--json")
    assert r.exit_code == 6, r.output
    assert json.loads(r.stdout)["gate"]["allowed"] is True
